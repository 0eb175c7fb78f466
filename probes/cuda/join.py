"""Joining the cuda probe's events with an engine's own steps (its step spans, or any list of step intervals): the
launches of each step and the straggler rank of each tensor-parallel step. Used by the checks in benchmarks/ and
available to the diagnosis, which holds the step spans."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from gpusleuth.probes.records import Event


@dataclass(slots=True, frozen=True)
class Step:
    """One engine step on one thread (`tid` 0: any thread of `pid`)."""

    pid: int
    tid: int
    start_ns: int
    end_ns: int


def launches_per_step(steps: list[Step], syncs: Iterable[Event]) -> list[int]:
    """Kernel launches (+ graph launches) of each step: the sum over the `cuda.sync` events that end inside it on
    its thread. Exact when the engine's launches of a step all precede a sync in the same step (an eager decode step
    ends by reading its sampled tokens back); launches made after a step's last sync count in the next step."""
    by_thread: dict[tuple[int, int], list[Event]] = {}
    for e in syncs:
        if e.kind == "cuda.sync":
            by_thread.setdefault((e.pid, e.tid), []).append(e)
    out = []
    for s in steps:
        events = [e for (pid, tid), evs in by_thread.items() if pid == s.pid and s.tid in (0, tid) for e in evs]
        out.append(sum(e.attrs["launches"] + e.attrs["graph_launches"] for e in events
                       if s.start_ns <= e.end_ns <= s.end_ns))
    return out


def straggler_per_step(steps: list[Step], stragglers: Iterable[Event]) -> list[int | None]:
    """The rank that held each step back: among the `tp.straggler` events whose collective began inside the step,
    the rank whose lateness cost the others the most wait; None for a step with no late collective."""
    late = sorted((e for e in stragglers if e.kind == "tp.straggler"), key=lambda e: e.start_ns)
    out: list[int | None] = []
    for s in steps:
        cost: Counter[int] = Counter()
        for e in late:
            if s.start_ns <= e.start_ns <= s.end_ns:
                cost[e.attrs["rank"]] += e.attrs["wait_ms"]
        out.append(cost.most_common(1)[0][0] if cost else None)
    return out
