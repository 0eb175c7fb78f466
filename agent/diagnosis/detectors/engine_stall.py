"""engine_stall: the engine's step loop stopped stepping while requests were waiting on it: its step thread
slept (a wait syscall, S state) inside or between steps, or no step ran at all, outside its idle waits.

This is how a loop that sleeps on every step is caught (the scheduler-sleep drill): the sleep is a wait syscall,
but one made while work was in flight, so it is a stall, not idle. Evidence: S-state `offcpu` events of the step
thread not ended by another engine thread (those are gil_contention's), slow wait syscalls of the step thread,
and the time between steps when the step thread was neither stepping nor idle (for a live window: only while a
heartbeat shows requests in flight) when a gap is long (a short one without evidence is the loop's usual overhead,
in the baseline). The step thread's usual sleep per step is discounted.
"""
from __future__ import annotations

from collections import Counter

from gpusleuth.agent.diagnosis.causes import who
from gpusleuth.agent.diagnosis.context import Context, Finding, cover, covered_ns
from gpusleuth.agent.diagnosis.detectors.common import ms, spans
from gpusleuth.agent.diagnosis.detectors.sleeps import split_sleeps, usual_sleep
from gpusleuth.agent.diagnosis.intervals import total
from gpusleuth.probes.kernel.syscall_table import WAIT_SYSCALLS
from gpusleuth.probes.records import Event

CAUSE = "engine_stall"
STALL_GAP_NS = 20_000_000  # a gap between steps this long with work in flight and no evidence is a stall
LIVE_GAP_NS = 1_000_000_000  # live: no step for this long while requests are in flight


def _gaps(ctx: Context) -> list[tuple[int, int]]:
    """Long gaps between a request's steps; in a live window, the part of a gap after it has lasted LIVE_GAP_NS
    while a heartbeat showed requests in flight (by then the sched probe has said if the engine is stopped)."""
    out = []
    for part in ctx.engine_parts():
        if part.name != "steps":
            out += [(a, b) for a, b in part.gaps if b - a >= STALL_GAP_NS]
            continue
        if (ctx.engine.in_flight_at(part.end_ns) or 0) <= 0:
            continue
        for a, b in part.gaps:
            before = ctx.engine.steps(a - LIVE_GAP_NS, a + 1)
            began = max((s.end_ns for s in before if s.end_ns <= a + 1), default=a - LIVE_GAP_NS)
            if b > began + LIVE_GAP_NS:
                out.append((max(a, began + LIVE_GAP_NS), b))
    return out


def _wait_calls(ctx: Context, gil: list[Event]) -> list[Event]:
    """Slow wait syscalls of the step thread, except those that were waits for another engine thread."""
    calls = [e for e in ctx.on_step_thread("slow_syscall") if e.attrs.get("syscall") in WAIT_SYSCALLS]
    return [c for c in calls if not any(g.start_ns < c.end_ns and c.start_ns < g.end_ns for g in gil)]


def detect(ctx: Context) -> list[Finding]:
    waits, slept = split_sleeps(ctx)
    calls = _wait_calls(ctx, waits)
    gaps = _gaps(ctx)
    got = cover(ctx, spans(slept + calls) + gaps, ctx.engine_parts())
    if not got:
        return []
    names: Counter = Counter()
    for e in calls:
        names[str(e.attrs.get("syscall"))] += e.end_ns - e.start_ns
    tid = next(iter(ctx.step_tids()), 0)
    comm = (slept + calls)[0].comm if slept or calls else "step thread"
    text = (f"{comm} (pid {ctx.pid}, tid {tid}) did not step for {ms(covered_ns(got))} of the request's time while "
            "requests were in flight")
    if slept:
        text += f": asleep {ms(total(spans(slept)))} in {len(slept)} waits"
    if names:
        text += f"; in {', '.join(f'{n} {ms(v)}' for n, v in names.most_common(2))}"
    if gaps:
        text += f"; {len(gaps)} gaps of {ms(total(gaps))} with no step running and the loop not idle"
    return [Finding(CAUSE, who(ctx.pid, comm, tid, syscall=names.most_common(1)[0][0] if names else None), text,
                    intervals=got, discount=usual_sleep(ctx),
                    figures={"sleeps": len(slept), "gap_ms": round(total(gaps) / 1e6, 3),
                             "syscalls": {n: round(v / 1e6, 3) for n, v in names.items()}})]
