"""A finished request's latency budget (diagnosis contract §3): where its time went, part by part, against what
the same engine normally takes for the same work.

Parts: arrival (the HTTP server's `received` span), queue, prefill and decode (the steps it was in, the steps it
waited through, the gaps between steps), stream. A request the server received right after the engine was resumed
from a stop or a freeze also gets a `backlog` part, from the stop's start (an upper bound: it waited in the socket
backlog since some time in the stop, which the engine's spans cannot see), expected to cost nothing.
Expected time of prefill and decode is the sum of the expected
cost of the steps the request was in (by batch shape) plus the usual gap between steps; a step it was *not* in
while in these phases (preempted, or waiting for its next prefill chunk) is expected to cost it nothing. Arrival,
queue and stream are expected to take their recent median. Excess = actual - expected, never below zero per part.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from gpusleuth.agent.diagnosis.baseline import EngineBaseline
from gpusleuth.agent.diagnosis.engines import EngineTimeline
from gpusleuth.agent.diagnosis.intervals import Interval, clip, merge, subtract
from gpusleuth.agent.diagnosis.spans import RequestSpans, Step

PARTS = ("backlog", "arrival", "queue", "prefill", "decode", "stream")
PHASE_OF_PART = {"arrival": "received", "queue": "queued", "prefill": "prefill", "decode": "decode",
                 "stream": "stream"}
STEP_PARTS = ("prefill", "decode")
ENGINE_PARTS = ("queue", "prefill", "decode", "steps")  # on the step thread; arrival, stream: the server's
BACKLOG_SLACK_NS = 25_000_000  # received this soon after the engine resumed: it was waiting for it
# (engine, lo, hi) -> (start, end) of a stop of the engine's threads that ended in [lo, hi], or None
StopLookup = Callable[[EngineTimeline, int, int], "tuple[int, int] | None"]
# Usual interference per decode step: the mix that 95 % of this engine's requests see is no excess. A lower quantile
# makes a fixed share of requests "slowed by their batch" by construction (q75: a quarter of them under steady load,
# which kept a batch_interference incident open on a clean host); only a heavier mix than usual is a cause.
INTERFERENCE_Q = 0.95


@dataclass(slots=True)
class Part:
    name: str
    start_ns: int
    end_ns: int
    expected_ns: float
    source: str  # where expected came from: "shape", "nearest", "median", "none" (no baseline: excess 0)
    own: list[Step] = field(default_factory=list)  # steps it was in
    waited: list[Step] = field(default_factory=list)  # steps of its engine it was not in
    gaps: list[Interval] = field(default_factory=list)  # no step running and the step thread not idle
    idle: list[Interval] = field(default_factory=list)  # the step thread waited for work
    interference_ns: float = 0.0  # decode: what other requests' prefill chunks added to its steps (expected)
    usual_interference_ns: float = 0.0  # of which this engine's requests usually see

    @property
    def actual_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def excess_ns(self) -> float:
        return max(0.0, self.actual_ns - self.expected_ns)

    def to_dict(self) -> dict:
        return {"part": self.name, "start_ns": self.start_ns, "end_ns": self.end_ns,
                "actual_ms": round(self.actual_ns / 1e6, 3), "expected_ms": round(self.expected_ns / 1e6, 3),
                "excess_ms": round(self.excess_ns / 1e6, 3), "steps": len(self.own), "waited_steps": len(self.waited),
                "baseline": self.source}


@dataclass(slots=True)
class Budget:
    request: RequestSpans
    parts: dict[str, Part]

    @property
    def actual_ns(self) -> int:
        return sum(p.actual_ns for p in self.parts.values())

    @property
    def expected_ns(self) -> float:
        return sum(p.expected_ns for p in self.parts.values())

    @property
    def excess_ns(self) -> float:
        return sum(p.excess_ns for p in self.parts.values())

    def steps(self) -> list[Step]:
        """The steps the request was in, oldest first."""
        return [s for name in STEP_PARTS if name in self.parts for s in self.parts[name].own]


def _is_own(step: Step, rid: str) -> bool:
    return not step.request_ids or rid in step.request_ids


def _step_part(name: str, lo: int, hi: int, rid: str, eng: EngineTimeline, base: EngineBaseline) -> Part:
    part = Part(name, lo, hi, 0.0, "shape")
    sb = base.rank(0)
    busy: list[Interval] = []
    for s in eng.steps(lo, hi):
        busy.append((max(lo, s.start_ns), min(hi, s.end_ns)))
        if not _is_own(s, rid):
            part.waited.append(s)
            continue
        part.own.append(s)
        frac = clip(s.start_ns, s.end_ns, lo, hi) / max(1, s.dur_ns)
        cost = sb.expected(s.num_decode, s.num_prefill_tokens)
        part.expected_ns += cost.dur_ns * frac
        if name == "decode" and s.num_prefill_tokens:
            part.interference_ns += max(0.0, cost.dur_ns - sb.expected(max(1, s.num_decode), 0).dur_ns) * frac
        if cost.source == "nearest":
            part.source = "nearest"
    part.idle = eng.idle_within(lo, hi)
    part.gaps = subtract(subtract([(lo, hi)], merge(busy)), merge(part.idle))
    usual_gap = base.part("gap").mean() or 0.0
    part.expected_ns += min(sum(b - a for a, b in part.gaps), usual_gap * max(1, len(part.own)))
    if part.interference_ns:  # only interference beyond the usual is excess (batch_interference explains it)
        usual = (base.part("interference").expected(INTERFERENCE_Q) or 0.0) * len(part.own)
        part.usual_interference_ns = min(part.interference_ns, usual)
        part.expected_ns -= part.interference_ns - part.usual_interference_ns
    if not sb.is_ready:  # no baseline yet: nothing can be called excess
        part.expected_ns, part.source = float(part.actual_ns), "none"
    return part


def _median_part(name: str, lo: int, hi: int, eng: EngineTimeline, base: EngineBaseline) -> Part:
    usual = base.part(name).expected()
    part = Part(name, lo, hi, usual if usual is not None else float(hi - lo), "median" if usual is not None else "none")
    if name == "queue":
        part.waited = eng.steps(lo, hi)
        part.idle = eng.idle_within(lo, hi)
    return part


def _backlog(req: RequestSpans, eng: EngineTimeline, stops: StopLookup | None) -> Part | None:
    """The time before arrival the request spent waiting for a stopped engine, where the evidence shows one."""
    first = req.phases.get("received") or req.phases.get("queued")
    if first is None or stops is None:
        return None
    stop = stops(eng, first[0] - BACKLOG_SLACK_NS, first[0])
    if stop is None:
        return None
    return Part("backlog", min(stop[0], first[0]), first[0], 0.0, "inferred")


def build_budget(req: RequestSpans, eng: EngineTimeline, base: EngineBaseline,
                 stops: StopLookup | None = None) -> Budget:
    """The budget of a finished request from its phases, its engine's steps and the engine's baseline; `stops`
    finds a stop of the engine that ended in a time range (for the backlog part)."""
    parts: dict[str, Part] = {}
    backlog = _backlog(req, eng, stops)
    if backlog is not None:
        parts["backlog"] = backlog
    for name in PARTS[1:]:
        span = req.phases.get(PHASE_OF_PART[name])
        if span is None:
            continue
        lo, hi = span
        parts[name] = (_step_part(name, lo, hi, req.request_id, eng, base) if name in STEP_PARTS
                       else _median_part(name, lo, hi, eng, base))
    return Budget(req, parts)
