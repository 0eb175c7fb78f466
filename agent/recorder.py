"""Recorder: flushes the store to parquet under the recording directory, one table per record kind.

Layout: DIR/samples/*.parquet and DIR/events/*.parquet, so `pandas.read_parquet(DIR / "samples")` is the sample
table. Every flush writes a small part file atomically (temp name starting with '.', fsync, rename), so `kill -9`
loses at most the records since the last flush and never touches earlier files. Parts are compacted into a
segment when they pass `segment_max_mb` or `segment_max_age_s`; the oldest segments go when the total passes
`total_cap_mb`. A segment's name carries the part ids it replaced, so a crash mid-compaction is repaired at start.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from gpusleuth.agent.config import RecorderSection
from gpusleuth.agent.store import Store
from gpusleuth.probes.records import Event, Sample, wall_offset_ns

log = logging.getLogger(__name__)
# Arrow's default pool (jemalloc/mimalloc) keeps tens of MB cached after the first write; the agent writes a small
# table every few seconds, so glibc's allocator (trimmed by the agent) keeps its resident memory flat instead.
pa.set_memory_pool(pa.system_memory_pool())

SAMPLE_SCHEMA = pa.schema([
    ("series", pa.string()), ("t_ns", pa.int64()), ("wall_ns", pa.int64()), ("value", pa.float64()),
    ("labels", pa.string()), ("boot_id", pa.string()),
])
EVENT_SCHEMA = pa.schema([
    ("kind", pa.string()), ("source", pa.string()), ("start_ns", pa.int64()), ("end_ns", pa.int64()),
    ("duration_ns", pa.int64()), ("wall_start_ns", pa.int64()), ("pid", pa.int64()), ("tid", pa.int64()),
    ("comm", pa.string()), ("attrs", pa.string()), ("boot_id", pa.string()),
])
KINDS = {"samples": SAMPLE_SCHEMA, "events": EVENT_SCHEMA}
CHUNK = 20_000  # records per part file at most
_PART_RE = re.compile(r"^part-(\d{12})\.parquet$")
_SEG_RE = re.compile(r"^seg-(\d{12})-(\d{12})\.parquet$")


def boot_id() -> str:
    """Identifies this boot: monotonic timestamps are only comparable within one."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def samples_table(samples: list[Sample], offset_ns: int, boot: str) -> pa.Table:
    return pa.table({
        "series": [s.series for s in samples], "t_ns": [s.t_ns for s in samples],
        "wall_ns": [s.t_ns + offset_ns for s in samples], "value": [float(s.value) for s in samples],
        "labels": [json.dumps(dict(s.labels), sort_keys=True) for s in samples], "boot_id": [boot] * len(samples),
    }, schema=SAMPLE_SCHEMA)


def events_table(events: list[Event], offset_ns: int, boot: str) -> pa.Table:
    return pa.table({
        "kind": [e.kind for e in events], "source": [e.source for e in events],
        "start_ns": [e.start_ns for e in events], "end_ns": [e.end_ns for e in events],
        "duration_ns": [e.end_ns - e.start_ns for e in events],
        "wall_start_ns": [e.start_ns + offset_ns for e in events], "pid": [e.pid for e in events],
        "tid": [e.tid for e in events], "comm": [e.comm for e in events],
        "attrs": [json.dumps(dict(e.attrs), sort_keys=True, default=str) for e in events],
        "boot_id": [boot] * len(events),
    }, schema=EVENT_SCHEMA)


def _write_atomically(table: pa.Table | list[Path], path: Path, schema: pa.Schema | None = None) -> None:
    """Write `table` (or the parquet files listed, one after the other, holding one in memory at a time) to `path`
    through a temp file, fsynced, then renamed."""
    tmp = path.with_name(f".{path.name}.tmp")
    if isinstance(table, pa.Table):
        pq.write_table(table, tmp, compression="zstd")
    else:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for part in table:
                writer.write_table(pq.read_table(part, schema=schema))
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class KindDir:
    """Parts and segments of one record kind in one folder."""

    def __init__(self, root: Path, kind: str) -> None:
        self.path = root / kind
        self.schema = KINDS[kind]
        self.path.mkdir(parents=True, exist_ok=True)
        self.next_id = 1 + max([self._max_id()], default=0)
        self.open_since = time.monotonic()
        self._recover()

    def _max_id(self) -> int:
        ids = [0]
        for f in os.listdir(self.path):
            if m := _PART_RE.match(f):
                ids.append(int(m.group(1)))
            elif m := _SEG_RE.match(f):
                ids.append(int(m.group(2)))
        return max(ids)

    def _recover(self) -> None:
        """Drop temp files of an interrupted write, and parts already folded into a segment."""
        covered = [tuple(map(int, m.groups())) for f in os.listdir(self.path) if (m := _SEG_RE.match(f))]
        for f in os.listdir(self.path):
            if f.startswith(".") and f.endswith(".tmp"):
                (self.path / f).unlink(missing_ok=True)
            elif (m := _PART_RE.match(f)) and any(lo <= int(m.group(1)) <= hi for lo, hi in covered):
                (self.path / f).unlink(missing_ok=True)

    def parts(self) -> list[Path]:
        return sorted(p for p in self.path.iterdir() if _PART_RE.match(p.name))

    def segments(self) -> list[Path]:
        return sorted(p for p in self.path.iterdir() if _SEG_RE.match(p.name))

    def write_part(self, table: pa.Table) -> Path:
        path = self.path / f"part-{self.next_id:012d}.parquet"
        _write_atomically(table, path)
        self.next_id += 1
        return path

    def compact(self) -> Path | None:
        """Fold all current parts into one segment (write, rename, then delete the parts)."""
        parts = self.parts()
        if not parts:
            return None
        lo, hi = (int(_PART_RE.match(p.name).group(1)) for p in (parts[0], parts[-1]))
        seg = self.path / f"seg-{lo:012d}-{hi:012d}.parquet"
        # part by part: reading ten minutes of parts at once took 200 MB that the heap kept (RSS 330 -> 458 MB)
        _write_atomically(parts, seg, self.schema)
        for p in parts:
            p.unlink(missing_ok=True)
        self.open_since = time.monotonic()
        return seg

    def size(self, files: list[Path] | None = None) -> int:
        total = 0
        for p in files if files is not None else [*self.segments(), *self.parts()]:
            try:
                total += p.stat().st_size
            except FileNotFoundError:
                pass
        return total


class Recorder:
    """Writes what the store gathered since the last flush; rotates and caps the folder."""

    def __init__(self, store: Store, config: RecorderSection) -> None:
        self.store = store
        self.config = config
        self.root = Path(config.directory)
        self.root.mkdir(parents=True, exist_ok=True)
        self.dirs = {kind: KindDir(self.root, kind) for kind in KINDS}
        self.boot = boot_id()
        self.flushes = 0
        self.last_error = ""
        store.start_recording()

    def flush(self) -> int:
        """Write parts with anything new; returns records written. The store keeps them on failure."""
        samples, events, cursor = self.store.unrecorded()
        offset = wall_offset_ns()
        # Chunks bound the transient memory of building Arrow tables from Python objects during a flood.
        for i in range(0, len(samples), CHUNK):
            self.dirs["samples"].write_part(samples_table(samples[i:i + CHUNK], offset, self.boot))
        for i in range(0, len(events), CHUNK):
            self.dirs["events"].write_part(events_table(events[i:i + CHUNK], offset, self.boot))
        written = len(samples) + len(events)
        self.store.mark_recorded(cursor)
        self.flushes += 1
        self._rotate()
        return written

    def _rotate(self) -> None:
        max_bytes = self.config.segment_max_mb << 20
        for kd in self.dirs.values():
            parts = kd.parts()
            too_old = time.monotonic() - kd.open_since >= self.config.segment_max_age_s
            if parts and (too_old or kd.size(parts) >= max_bytes):
                kd.compact()
        self._enforce_cap()

    def _enforce_cap(self) -> None:
        cap = self.config.total_cap_mb << 20
        segments = sorted((p for kd in self.dirs.values() for p in kd.segments()), key=lambda p: p.stat().st_mtime)
        total = self.size()
        while total > cap and segments:
            oldest = segments.pop(0)
            size = oldest.stat().st_size
            oldest.unlink(missing_ok=True)
            total -= size
            log.info("recording cap %d MB reached: removed %s", self.config.total_cap_mb, oldest.name)

    def size(self) -> int:
        return sum(kd.size() for kd in self.dirs.values())

    def status(self) -> dict[str, Any]:
        return {"directory": str(self.root), "bytes": self.size(), "flushes": self.flushes,
                "segments": sum(len(kd.segments()) for kd in self.dirs.values()),
                "parts": sum(len(kd.parts()) for kd in self.dirs.values()), "last_error": self.last_error}

    def close(self) -> None:
        """Final flush and fold the open parts into a segment."""
        self.flush()
        for kd in self.dirs.values():
            kd.compact()
