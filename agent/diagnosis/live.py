"""The live diagnosis of an engine over the last second (what incidents are made of): the same budget and the same
detectors as for a request, over a window of the step thread's time instead of one request's parts.

Causes a window of steps cannot show (a request waiting in the queue, its response slow to go out) come from the
requests that finished: a few with the same likely top cause in the last seconds open its incident too.

The window's single part, "steps", holds every rank-0 step in it; its expected time is the steps' expected cost
plus the usual gaps, so a window with no step at all (a frozen or stalled loop) is nearly all excess. What the
sched snapshot says is going on right now (`ongoing`: threads stopped, in D state or runnable without running for
>= 100 ms) enters as open-ended evidence, so a freeze is seen while it lasts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from gpusleuth.agent.diagnosis.attribution import Verdict, attribute
from gpusleuth.agent.diagnosis.baseline import EngineBaseline
from gpusleuth.agent.diagnosis.budget import Budget, Part
from gpusleuth.agent.diagnosis.context import Context, Finding, HostInfo
from gpusleuth.agent.diagnosis.engines import EngineTimeline
from gpusleuth.agent.diagnosis.evidence import EvidenceIndex, SampleIndex
from gpusleuth.agent.diagnosis.explain import run_detectors
from gpusleuth.agent.diagnosis.intervals import clip, merge, subtract
from gpusleuth.agent.diagnosis.spans import RequestSpans
from gpusleuth.probes.records import Event

MIN_FROZEN_NS = 40_000_000  # a stop this long in a window is an incident, work or not (never normal)
MIN_EXPLAINED_NS = 50_000_000  # an incident explains at least this much of a window ...
MIN_EXCESS_FRACTION = 0.2  # ... of an excess at least this fraction of the window's expected time
ALONE_NS = 100_000_000  # a cause explaining this much of a 1 s window is an incident whatever else is going on
ONGOING_KIND = {"T": "offcpu", "t": "offcpu", "frozen": "offcpu", "D": "offcpu", "R": "runq_delay"}


@dataclass(slots=True)
class Candidate:
    """A cause the last window of an engine points at."""

    engine_pid: int
    verdict: Verdict
    onset_ns: int  # where its evidence in the window starts
    window: tuple[int, int]


@dataclass(slots=True)
class SlowRequest:
    engine_pid: int
    start_ns: int
    end_ns: int
    verdict: Verdict


REQUESTS_WINDOW_NS = 5_000_000_000
MIN_SLOW_REQUESTS = 3
MIN_SLOW_SHARE = 0.25  # ... and at least this share of the engine's requests that finished in the window


def from_requests(slow: Iterable[SlowRequest], finished: Iterable[tuple[int, int]], hi: int) -> list[Candidate]:
    """Causes that at least MIN_SLOW_REQUESTS requests finished in the last REQUESTS_WINDOW_NS, and at least
    MIN_SLOW_SHARE of that engine's finished requests, were likely slowed by.

    The share matters under load: at 6 requests a second, three requests in five seconds slowed by the prompts
    chunked into their decode steps (or by waiting their turn) is an ordinary tail, not an incident; a fault slows
    most requests of its window. `finished` holds (engine pid, end) of every diagnosed request."""
    lo = hi - REQUESTS_WINDOW_NS
    ended: dict[int, int] = {}
    for pid, end_ns in finished:
        if lo <= end_ns <= hi:
            ended[pid] = ended.get(pid, 0) + 1
    groups: dict[tuple[int, str], list[SlowRequest]] = {}
    for r in slow:
        if lo <= r.end_ns <= hi:
            groups.setdefault((r.engine_pid, r.verdict.cause), []).append(r)
    out = []
    for (pid, _), rs in groups.items():
        if len(rs) >= max(MIN_SLOW_REQUESTS, MIN_SLOW_SHARE * ended.get(pid, len(rs))):
            last = max(rs, key=lambda r: r.end_ns)
            out.append(Candidate(pid, last.verdict, min(_onset(r.verdict, None, r.start_ns) for r in rs),
                                 (lo, hi)))
    return out


def window_budget(eng: EngineTimeline, base: EngineBaseline, lo: int, hi: int) -> Budget:
    part = Part("steps", lo, hi, 0.0, "shape")
    sb = base.rank(0)
    busy = []
    for s in eng.steps(lo, hi):
        part.own.append(s)
        busy.append((max(lo, s.start_ns), min(hi, s.end_ns)))
        part.expected_ns += sb.expected(s.num_decode, s.num_prefill_tokens).dur_ns * \
            clip(s.start_ns, s.end_ns, lo, hi) / max(1, s.dur_ns)
    part.idle = eng.idle_within(lo, hi)
    part.gaps = subtract(subtract([(lo, hi)], merge(busy)), merge(part.idle))
    usual_gap = base.part("gap").mean() or 0.0
    part.expected_ns += min(sum(b - a for a, b in part.gaps), usual_gap * max(1, len(part.own)))
    part.expected_ns += sum(b - a for a, b in merge(part.idle))  # waiting for work is what an idle engine does
    if not sb.is_ready and part.own:
        part.expected_ns, part.source = float(part.actual_ns), "none"
    return Budget(RequestSpans(f"window-{lo}", eng.pid), {"steps": part})


def ongoing_events(sched: Any, pids: set[int], now_ns: int) -> list[Event]:
    """The sched snapshot's ongoing states of the engine's threads as events open until now."""
    out = []
    for o in getattr(sched, "ongoing", None) or ():
        get = o.get if isinstance(o, dict) else (lambda k, o=o: getattr(o, k, None))
        pid, state = int(get("pid") or 0), str(get("state") or "")
        if pid not in pids or state not in ONGOING_KIND:
            continue
        out.append(Event(ONGOING_KIND[state], "sched", int(get("since_ns") or now_ns), now_ns, pid=pid,
                         tid=int(get("tid") or 0), comm=str(get("comm") or ""),
                         attrs={"state": state, "cpu": get("cpu"), "is_ongoing": True}))
    return out


def _onset(v: Verdict, ctx: Context | None, lo: int) -> int:
    """Where the verdict's evidence starts: its first claimed interval, or an ongoing state's start."""
    starts = [a for ivs in (v.finding.intervals.values() if v.finding else ()) for a, _ in ivs]
    if v.cause == "process_frozen" and ctx is not None:
        starts += [e.start_ns for e in ctx.extra if e.kind == "offcpu"]
    return min(starts) if starts else lo


def candidates(eng: EngineTimeline, base: EngineBaseline, evidence: EvidenceIndex, samples: SampleIndex,
               host: HostInfo, lo: int, hi: int, extra: Iterable[Event] = ()) -> list[Candidate]:
    """Causes that explain enough of the window [lo, hi] of one engine to open (or keep) an incident."""
    budget = window_budget(eng, base, lo, hi)
    ctx = Context(budget, eng, base, evidence, samples, host, list(extra))
    findings = run_detectors(ctx)
    verdicts, _ = attribute(budget, findings)
    found = [Candidate(eng.pid, v, _onset(v, ctx, lo), (lo, hi)) for v in _frozen(findings)]
    if budget.excess_ns < max(MIN_EXPLAINED_NS, MIN_EXCESS_FRACTION * budget.expected_ns):
        return found
    return found + [Candidate(eng.pid, v, _onset(v, ctx, lo), (lo, hi)) for v in verdicts
                    if v.cause != "process_frozen" and _is_enough(v, budget.excess_ns)]


def _is_enough(v: Verdict, excess_ns: float) -> bool:
    """Most of the window's excess, or a good part of it, or a tenth of the window's wall time outright (two
    causes at once: a busy neighbour must not hide a stall)."""
    return (v.explained_ns >= max(MIN_EXPLAINED_NS, 0.5 * excess_ns)
            or (v.explained_ns >= MIN_EXPLAINED_NS and v.share >= 0.3) or v.explained_ns >= ALONE_NS)


def _frozen(findings: list[Finding]) -> list[Verdict]:
    """A stopped engine is an incident on its evidence alone: stopped while idle it has no excess (nothing to do
    in its own eyes) but cannot even receive work."""
    out = []
    for f in findings:
        ns = sum(b - a for ivs in f.intervals.values() for a, b in merge(ivs))
        if f.cause == "process_frozen" and ns >= MIN_FROZEN_NS:
            out.append(Verdict(f.cause, f.culprit, float(ns), 1.0, f.evidence, {"steps": float(ns)}, True,
                               f.figures, f))
    return out
