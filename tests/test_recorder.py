"""Recorder: parquet parts and segments, rotation, cap, and recovery after an interrupted write."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd

from gpusleuth.agent.config import RecorderSection
from gpusleuth.agent.recorder import Recorder
from gpusleuth.agent.store import Store
from gpusleuth.probes.records import Event, Sample


def _fill(store: Store, n: int, t0: int = 0) -> None:
    store.add([Sample("gpu.power_w", t0 + i, float(i), {"gpu": "0"}) for i in range(n)],
              [Event("slow_syscall", "syscalls", t0 + i, t0 + i + 10, pid=42, attrs={"syscall": "read"})
               for i in range(n)])


def test_flush_reads_back_one_table_per_kind(tmp_path):
    store = Store(64 << 20)
    rec = Recorder(store, RecorderSection(directory=str(tmp_path)))
    _fill(store, 100)
    assert rec.flush() == 200
    _fill(store, 50, t0=1000)
    rec.flush()
    samples = pd.read_parquet(tmp_path / "samples")
    events = pd.read_parquet(tmp_path / "events")
    assert len(samples) == 150 and len(events) == 150
    assert sorted(samples.t_ns)[:3] == [0, 1, 2]
    assert set(events.kind) == {"slow_syscall"} and (events.duration_ns == 10).all()
    assert rec.flush() == 0  # nothing new: nothing written twice


def test_rotation_by_age_compacts_parts_into_a_segment(tmp_path):
    store = Store(64 << 20)
    rec = Recorder(store, RecorderSection(directory=str(tmp_path), segment_max_age_s=1))
    for i in range(3):
        _fill(store, 10, t0=i * 100)
        rec.flush()
    time.sleep(1.1)
    _fill(store, 10, t0=1000)
    rec.flush()
    status = rec.status()
    assert status["segments"] == 2 and status["parts"] == 0
    assert len(pd.read_parquet(tmp_path / "samples")) == 40


def test_total_cap_removes_oldest_segments(tmp_path):
    store = Store(256 << 20)
    cfg = RecorderSection(directory=str(tmp_path), segment_max_mb=1, total_cap_mb=16)
    rec = Recorder(store, cfg)
    for round_ in range(30):
        # random-ish labels so zstd cannot shrink a segment below the 1 MB rotation size
        store.add([Sample("x", round_ * 10**6 + i, float(i), {"k": os.urandom(24).hex()}) for i in range(40_000)])
        rec.flush()
    assert rec.size() <= (16 << 20) + (2 << 20)  # the cap, plus at most the open parts
    samples = pd.read_parquet(tmp_path / "samples")
    assert samples.t_ns.min() > 0, "the oldest segment should have been removed"


CRASHING_WRITER = """
import sys, time
from gpusleuth.agent.config import RecorderSection
from gpusleuth.agent.recorder import Recorder
from gpusleuth.agent.store import Store
from gpusleuth.probes.records import Sample
store = Store(64 << 20)
rec = Recorder(store, RecorderSection(directory=sys.argv[1], flush_interval_s=0.2))
i = 0
while True:
    store.add([Sample("tick", i, float(i))])
    i += 1
    if i % 100 == 0:
        rec.flush()
        print(i, flush=True)
"""


def test_kill9_mid_run_leaves_readable_files(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", CRASHING_WRITER, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
    flushed = 0
    while flushed < 2000:
        flushed = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # a leftover temp file of an interrupted write is ignored by readers and removed by the next recorder
    (tmp_path / "samples" / ".part-000000999999.parquet.tmp").write_bytes(b"PAR1 truncated")
    ticks = pd.read_parquet(tmp_path / "samples")
    assert ticks.t_ns.max() >= flushed - 1
    assert sorted(ticks.t_ns) == list(range(len(ticks)))  # no gaps, no duplicates before the kill
    Recorder(Store(), RecorderSection(directory=str(tmp_path)))
    assert not list((tmp_path / "samples").glob(".*.tmp"))


def test_interrupted_compaction_does_not_duplicate(tmp_path):
    store = Store()
    rec = Recorder(store, RecorderSection(directory=str(tmp_path)))
    _fill(store, 10)
    rec.flush()
    parts = rec.dirs["samples"].parts()
    # simulate a crash after the segment was renamed into place but before its parts were deleted
    saved = [p.read_bytes() for p in parts]
    rec.dirs["samples"].compact()
    for p, data in zip(parts, saved):
        p.write_bytes(data)
    Recorder(Store(), RecorderSection(directory=str(tmp_path)))
    assert len(pd.read_parquet(tmp_path / "samples")) == 10
