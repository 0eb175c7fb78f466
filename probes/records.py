"""The two record kinds every source produces: Samples (a value at an instant) and Events (an interval).

All timestamps are CLOCK_MONOTONIC nanoseconds, the clock `bpf_ktime_get_ns()` and `time.monotonic_ns()` read.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(slots=True, frozen=True)
class Sample:
    """A value of a named series at one instant, e.g. GPU power or one histogram bucket's count for an interval."""

    series: str
    t_ns: int
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"series": self.series, "t_ns": self.t_ns, "value": self.value, "labels": dict(self.labels)}


@dataclass(slots=True, frozen=True)
class Event:
    """An interval with attributes: a slow syscall, a microburst, an XID, a request phase."""

    kind: str
    source: str
    start_ns: int
    end_ns: int
    pid: int = 0
    tid: int = 0
    comm: str = ""
    attrs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    def overlaps(self, start_ns: int, end_ns: int) -> bool:
        """True when this event's interval shares any time with [start_ns, end_ns]."""
        return self.start_ns <= end_ns and self.end_ns >= start_ns

    def to_dict(self) -> dict[str, Any]:
        """The JSON form the control socket and recordings' readers use."""
        return {"kind": self.kind, "source": self.source, "start_ns": self.start_ns, "end_ns": self.end_ns,
                "pid": self.pid, "tid": self.tid, "comm": self.comm, "attrs": dict(self.attrs)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Event":
        return cls(d["kind"], d.get("source", ""), int(d["start_ns"]), int(d["end_ns"]), int(d.get("pid") or 0),
                   int(d.get("tid") or 0), d.get("comm") or "", d.get("attrs") or {})


def monotonic_ns() -> int:
    """Now on the one clock (CLOCK_MONOTONIC), the same as bpf_ktime_get_ns()."""
    return time.monotonic_ns()


def wall_offset_ns() -> int:
    """Add this to a monotonic timestamp to get Unix wall-clock nanoseconds (read fresh: NTP may slew)."""
    return time.time_ns() - time.monotonic_ns()
