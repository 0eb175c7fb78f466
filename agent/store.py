"""The agent's in-memory store: bounded rings of Samples and Events, and each probe's latest snapshot.

Writers are the probe threads; readers are the recorder, the exporters and the control socket. The rings are
bounded by a memory cap; a record evicted before the recorder wrote it is counted as dropped.
"""
from __future__ import annotations

import itertools
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable, TypedDict

from gpusleuth.probes.records import Event, Sample

# Resident sizes of one record as the probes make them, measured with tracemalloc on CPython 3.11 (a syscall Sample
# with 3 labels: 365 B; a request.finished Event: 580 B, an engine.step Event with its 12 attributes: 700 B),
# rounded up: the memory cap holds what it says.
SAMPLE_BYTES = 380
EVENT_BYTES = 700


@dataclass(slots=True)
class _Ring:
    records: deque
    capacity: int
    next_seq: int = 0  # sequence number the next appended record gets
    evicted: int = 0
    dropped: int = 0  # evicted before the recorder saw it

    @property
    def first_seq(self) -> int:
        return self.next_seq - len(self.records)

    def extend(self, items: Iterable[Any], recorded_seq: int) -> None:
        for item in items:
            if len(self.records) == self.capacity:
                if self.first_seq >= recorded_seq:
                    self.dropped += 1
                self.evicted += 1
            self.records.append(item)
            self.next_seq += 1

    def since(self, seq: int) -> tuple[list[Any], int, int]:
        """Records with sequence >= seq, the next sequence, and how many were already evicted (lost to the reader)."""
        first = self.first_seq
        lost = max(0, first - seq)
        start = max(seq, first) - first
        items = list(self.records)[start:] if start else list(self.records)
        return items, self.next_seq, lost


def _newest(ring: _Ring, seq: int) -> list[Any]:
    """The ring's records from sequence `seq` on, copying only those (the ring may hold hundreds of thousands)."""
    n = min(len(ring.records), max(0, ring.next_seq - seq))
    return list(itertools.islice(reversed(ring.records), n))[::-1]


class StoreStats(TypedDict):
    """The store's ring sizes and losses (part of the agent's health snapshot)."""

    samples: int  # records held now
    events: int
    sample_capacity: int
    event_capacity: int
    samples_total: int  # appended since start
    events_total: int
    samples_evicted: int  # aged out of a full ring
    events_evicted: int
    samples_dropped: int  # evicted before the recorder wrote them
    events_dropped: int
    approx_bytes: int


class Store:
    """Bounded, thread-safe rings of Samples and Events plus the latest snapshot per source."""

    def __init__(self, memory_cap_bytes: int = 256 << 20) -> None:
        # Events are rarer but carry attributes; give each kind half of the cap.
        n_samples = max(1024, memory_cap_bytes // 2 // SAMPLE_BYTES)
        n_events = max(1024, memory_cap_bytes // 2 // EVENT_BYTES)
        self._lock = threading.Lock()
        self._samples = _Ring(deque(maxlen=n_samples), n_samples)
        self._events = _Ring(deque(maxlen=n_events), n_events)
        self._snapshots: dict[str, Any] = {}  # source -> its snapshot object (probes/<room>/snapshot.py)
        self._recorded = {"samples": 0, "events": 0}  # next seq the recorder has not yet written
        self._is_recording = False
        self.memory_cap_bytes = memory_cap_bytes

    def add(self, samples: Iterable[Sample] = (), events: Iterable[Event] = ()) -> None:
        with self._lock:
            # Without a recorder nothing waits to be written, so eviction is normal ageing, not a drop.
            never = 1 << 62
            floor_s = self._recorded["samples"] if self._is_recording else never
            floor_e = self._recorded["events"] if self._is_recording else never
            self._samples.extend(samples, floor_s)
            self._events.extend(events, floor_e)

    def set_snapshot(self, source: str, snapshot: Any) -> None:
        """Replace `source`'s latest state (its probe's snapshot type; treat it as immutable once stored)."""
        with self._lock:
            self._snapshots[source] = snapshot

    def snapshot(self, source: str) -> Any:
        """`source`'s latest snapshot, or None before its first poll."""
        with self._lock:
            return self._snapshots.get(source)

    def snapshots(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._snapshots)

    # The recorder's cursor: it takes what is new, writes it, then confirms, so a failed write loses nothing.
    def start_recording(self) -> None:
        with self._lock:
            self._is_recording = True
            self._recorded = {"samples": self._samples.first_seq, "events": self._events.first_seq}

    def unrecorded(self) -> tuple[list[Sample], list[Event], dict[str, int]]:
        with self._lock:
            samples, s_next, _ = self._samples.since(self._recorded["samples"])
            events, e_next, _ = self._events.since(self._recorded["events"])
        return samples, events, {"samples": s_next, "events": e_next}

    def mark_recorded(self, cursor: dict[str, int]) -> None:
        with self._lock:
            self._recorded = dict(cursor)

    def events_since(self, seq: int) -> tuple[list[Event], int]:
        """Events appended at sequence `seq` or later, oldest first, and the sequence to ask for next (a reader's
        cursor; what aged out of the ring before it asked is skipped)."""
        with self._lock:
            return _newest(self._events, seq), self._events.next_seq

    def samples_since(self, seq: int) -> tuple[list[Sample], int]:
        """`events_since` for Samples."""
        with self._lock:
            return _newest(self._samples, seq), self._samples.next_seq

    def events(self, start_ns: int | None = None, end_ns: int | None = None, kinds: Iterable[str] | None = None,
               pid: int | None = None, limit: int | None = None) -> list[Event]:
        """Events overlapping [start_ns, end_ns] (newest last), optionally of given kinds or pid."""
        kinds = set(kinds) if kinds else None
        lo = start_ns if start_ns is not None else -(1 << 63)
        hi = end_ns if end_ns is not None else 1 << 63
        with self._lock:
            records = list(self._events.records)
        out = [e for e in records if e.overlaps(lo, hi) and (kinds is None or e.kind in kinds)
               and (pid is None or e.pid == pid)]
        return out[-limit:] if limit else out

    def samples(self, series: str | None = None, start_ns: int | None = None, end_ns: int | None = None,
                limit: int | None = None) -> list[Sample]:
        lo = start_ns if start_ns is not None else -(1 << 63)
        hi = end_ns if end_ns is not None else 1 << 63
        with self._lock:
            records = list(self._samples.records)
        out = [s for s in records if (series is None or s.series == series) and lo <= s.t_ns <= hi]
        return out[-limit:] if limit else out

    def stats(self) -> StoreStats:
        with self._lock:
            s, e = self._samples, self._events
            return {
                "samples": len(s.records), "events": len(e.records),
                "sample_capacity": s.capacity, "event_capacity": e.capacity,
                "samples_total": s.next_seq, "events_total": e.next_seq,
                "samples_evicted": s.evicted, "events_evicted": e.evicted,
                "samples_dropped": s.dropped, "events_dropped": e.dropped,
                "approx_bytes": len(s.records) * SAMPLE_BYTES + len(e.records) * EVENT_BYTES,
            }
