"""Recordings made for tests: a recorder directory (DIR/events, DIR/samples parquet, as agent/recorder.py writes)
from a recorded fault-suite window (tests/fixtures/diagnosis) or from events a test builds."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from gpusleuth.agent.recorder import events_table, samples_table
from gpusleuth.probes.records import Event, Sample
from tests.diagnosis_helpers import fixture

WALL_OFFSET = 1_700_000_000_000_000_000


def write_recording(root: Path, events: Iterable[Event], samples: Iterable[Sample] = ()) -> Path:
    """`root` as a one-segment recording of `events` and `samples` (one boot)."""
    import pyarrow.parquet as pq  # noqa: PLC0415

    for kind, table in (("events", events_table(list(events), WALL_OFFSET, "boot-1")),
                        ("samples", samples_table(list(samples), WALL_OFFSET, "boot-1"))):
        (root / kind).mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / kind / "seg-000000000001-000000000001.parquet")
    return root


def fault_recording(root: Path, name: str = "cpu_hog_fifo") -> tuple[Path, dict]:
    """A recording of one fault-suite window (a real agent watching the tiny engine while a fault ran), and the
    window's ground truth (cause, culprit, onset_ns)."""
    data = fixture(name)
    return write_recording(root, data["events"], data["samples"]), data
