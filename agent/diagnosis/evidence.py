"""Recent Events and Samples indexed for the diagnosis: by kind (and process), sorted by start, pruned by age.

Written here rather than reusing the store's rings: the store keeps every record in arrival order for the
recorder, while the detectors ask "events of kind K of process P overlapping [lo, hi]" hundreds of times a second.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from gpusleuth.probes.records import Event, Sample


@dataclass(slots=True)
class _Sorted:
    """Events sorted by start (sorted lazily on read), with the longest duration seen to bound searches."""

    starts: list[int] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    max_dur: int = 0
    is_sorted: bool = True

    def add(self, e: Event) -> None:
        if self.starts and e.start_ns < self.starts[-1]:
            self.is_sorted = False
        self.starts.append(e.start_ns)
        self.events.append(e)
        self.max_dur = max(self.max_dur, e.end_ns - e.start_ns)

    def overlapping(self, lo: int, hi: int) -> Iterator[Event]:
        if not self.is_sorted:
            order = sorted(range(len(self.events)), key=self.starts.__getitem__)
            self.events = [self.events[i] for i in order]
            self.starts = [self.starts[i] for i in order]
            self.is_sorted = True
        i = bisect.bisect_left(self.starts, lo - self.max_dur)
        j = bisect.bisect_right(self.starts, hi)
        for e in self.events[i:j]:
            if e.end_ns >= lo:
                yield e


class EvidenceIndex:
    """Events by kind and by (kind, pid); `prune` forgets what ended before a horizon."""

    def __init__(self) -> None:
        self._by_kind: dict[str, _Sorted] = {}
        self._by_pid: dict[tuple[str, int], _Sorted] = {}

    def add(self, events: Iterable[Event]) -> None:
        for e in events:
            self._by_kind.setdefault(e.kind, _Sorted()).add(e)
            if e.pid:
                self._by_pid.setdefault((e.kind, e.pid), _Sorted()).add(e)

    def events(self, kind: str, lo: int, hi: int, pid: int | None = None,
               tids: set[int] | None = None) -> list[Event]:
        """Events of `kind` overlapping [lo, hi] (of process `pid`, of threads `tids` when given)."""
        s = self._by_kind.get(kind) if pid is None else self._by_pid.get((kind, pid))
        if s is None:
            return []
        return [e for e in s.overlapping(lo, hi) if tids is None or e.tid in tids]

    def kinds(self) -> list[str]:
        return list(self._by_kind)

    def prune(self, horizon_ns: int) -> None:
        """Forget events that ended before `horizon_ns`."""
        for table in (self._by_kind, self._by_pid):
            for key in list(table):
                old = table[key]
                kept = [e for e in old.events if e.end_ns >= horizon_ns]
                if not kept:
                    del table[key]
                elif len(kept) != len(old.events):
                    fresh = _Sorted()
                    for e in sorted(kept, key=lambda e: e.start_ns):
                        fresh.add(e)
                    table[key] = fresh


class SampleIndex:
    """Samples of the series the detectors read, by series and label set, in time order."""

    def __init__(self, series: Iterable[str]) -> None:
        self.wanted = frozenset(series)
        self._by_series: dict[str, dict[tuple, tuple[list[int], list[float]]]] = {}

    def add(self, samples: Iterable[Sample]) -> None:
        for s in samples:
            if s.series not in self.wanted:
                continue
            key = tuple(sorted(s.labels.items()))
            ts, vs = self._by_series.setdefault(s.series, {}).setdefault(key, ([], []))
            if ts and s.t_ns < ts[-1]:
                i = bisect.bisect_right(ts, s.t_ns)
                ts.insert(i, s.t_ns)
                vs.insert(i, float(s.value))
            else:
                ts.append(s.t_ns)
                vs.append(float(s.value))

    def series(self, name: str, lo: int, hi: int, **match: str) -> list[tuple[dict[str, str], list[tuple[int, float]]]]:
        """Per label set matching `match`: the points with lo <= t <= hi."""
        out = []
        for key, (ts, vs) in self._by_series.get(name, {}).items():
            labels = dict(key)
            if any(labels.get(k) != v for k, v in match.items()):
                continue
            i, j = bisect.bisect_left(ts, lo), bisect.bisect_right(ts, hi)
            if j > i:
                out.append((labels, list(zip(ts[i:j], vs[i:j]))))
        return out

    def last_before(self, name: str, t: int, **match: str) -> list[tuple[dict[str, str], int, float]]:
        """Per matching label set, the newest point at or before t."""
        out = []
        for key, (ts, vs) in self._by_series.get(name, {}).items():
            labels = dict(key)
            if any(labels.get(k) != v for k, v in match.items()):
                continue
            i = bisect.bisect_right(ts, t)
            if i:
                out.append((labels, ts[i - 1], vs[i - 1]))
        return out

    def prune(self, horizon_ns: int) -> None:
        for name, table in self._by_series.items():
            for key in list(table):
                ts, vs = table[key]
                i = bisect.bisect_left(ts, horizon_ns)
                if i == len(ts):
                    del table[key]
                elif i:
                    table[key] = (ts[i:], vs[i:])
