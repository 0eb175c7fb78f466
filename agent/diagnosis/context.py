"""What a detector sees: one budget (a finished request, or a live window of an engine's steps), the engine's
spans and baseline, and the host evidence, with helpers that select evidence on the budget's own path.

A detector returns Findings: per budget part, the time on the path its evidence covers (intervals) or an amount
it accounts for without intervals (GPU time above baseline, time spent waiting behind other requests).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gpusleuth.agent.diagnosis.baseline import EngineBaseline
from gpusleuth.agent.diagnosis.budget import ENGINE_PARTS, Budget, Part
from gpusleuth.agent.diagnosis.causes import Culprit
from gpusleuth.agent.diagnosis.engines import EngineTimeline
from gpusleuth.agent.diagnosis.evidence import EvidenceIndex, SampleIndex
from gpusleuth.agent.diagnosis.intervals import Interval, merge, subtract
from gpusleuth.probes.records import Event


@dataclass(slots=True)
class Finding:
    cause: str
    culprit: Culprit
    evidence: str
    intervals: dict[str, list[Interval]] = field(default_factory=dict)  # part -> covered time on the path
    amounts: dict[str, float] = field(default_factory=dict)  # part -> ns accounted for without intervals
    discount: dict[str, float] = field(default_factory=dict)  # part -> ns of `intervals` that are normal
    figures: dict[str, Any] = field(default_factory=dict)  # numbers behind the evidence text


@dataclass(slots=True)
class HostInfo:
    """Facts about the host the snapshots give: GPU uuid -> NVML index, pid -> comm, the engine's cgroups."""

    gpu_index_by_uuid: dict[str, int] = field(default_factory=dict)
    comms: dict[int, str] = field(default_factory=dict)
    cgroups: dict[int, str] = field(default_factory=dict)  # pid -> cgroup path (from cgroup samples)
    tids: dict[int, int] = field(default_factory=dict)  # tid -> pid of the engines' threads


@dataclass(slots=True)
class Context:
    budget: Budget
    engine: EngineTimeline
    baseline: EngineBaseline
    evidence: EvidenceIndex
    samples: SampleIndex
    host: HostInfo = field(default_factory=HostInfo)
    extra: list[Event] = field(default_factory=list)  # evidence not in the index (ongoing states of a live tick)

    @property
    def pid(self) -> int:
        return self.engine.pid

    def pids(self) -> set[int]:
        """The engine's processes (rank 0 and the other ranks)."""
        return {self.engine.pid, *self.engine.rank_pids.values()}

    def step_tids(self) -> set[int]:
        """Threads that ran this budget's steps (rank 0), or the engine's known step thread."""
        tids = {s.tid for s in self.budget.steps() if s.tid}
        for part in self.budget.parts.values():
            tids.update(s.tid for s in part.waited if s.tid and s.rank == 0)
        if not tids and self.engine.step_tid:
            tids.add(self.engine.step_tid)
        return tids

    def engine_parts(self) -> list[Part]:
        return [p for n, p in self.budget.parts.items() if n in ENGINE_PARTS]

    def server_parts(self) -> list[Part]:
        return [p for n, p in self.budget.parts.items() if n not in ENGINE_PARTS]

    def busy(self, part: Part) -> list[Interval]:
        """The part's time when the step thread had work (its idle waits left out)."""
        return subtract([(part.start_ns, part.end_ns)], merge(part.idle))

    def window(self) -> tuple[int, int]:
        parts = list(self.budget.parts.values())
        return min(p.start_ns for p in parts), max(p.end_ns for p in parts)

    def events(self, kind: str, lo: int, hi: int, pid: int | None = None) -> list[Event]:
        found = self.evidence.events(kind, lo, hi, pid)
        found += [e for e in self.extra if e.kind == kind and (pid is None or e.pid == pid)
                  and e.start_ns <= hi and e.end_ns >= lo]
        return found

    def on_step_thread(self, kind: str) -> list[Event]:
        """Events of `kind` on the step thread during the budget's engine parts (any engine thread when the engine
        never said which thread steps)."""
        lo, hi = self.window()
        tids = self.step_tids()
        return [e for e in self.events(kind, lo, hi, self.pid) if not tids or e.tid in tids]

    def off_step_thread(self, kind: str) -> list[Event]:
        """Events of `kind` on the engine's other threads (the HTTP server's) during the budget."""
        lo, hi = self.window()
        tids = self.step_tids()
        return [e for e in self.events(kind, lo, hi, self.pid) if e.tid not in tids]


def cover(ctx: Context, intervals: list[Interval], parts: list[Part],
          busy_only: bool = True) -> dict[str, list[Interval]]:
    """Per part: the part of `intervals` inside it (inside its busy time when `busy_only`)."""
    merged = merge(intervals)
    out: dict[str, list[Interval]] = {}
    for p in parts:
        span = ctx.busy(p) if busy_only else [(p.start_ns, p.end_ns)]
        got = [(max(a, lo), min(b, hi)) for a, b in merged for lo, hi in span if a < hi and b > lo]
        if got:
            out[p.name] = got
    return out


def covered_ns(claims: dict[str, list[Interval]]) -> int:
    return sum(b - a for ivs in claims.values() for a, b in ivs)
