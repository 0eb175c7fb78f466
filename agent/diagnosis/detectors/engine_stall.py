"""engine_stall: the engine's step loop stopped stepping while requests were waiting on it: its step thread
slept (a wait syscall, S state) inside or between steps, or no step ran at all, outside its idle waits.

This is how a loop that sleeps on every step is caught (the scheduler-sleep drill): the sleep is a wait syscall,
but one made while work was in flight, so it is a stall, not idle. Evidence: S-state `offcpu` events of the step
thread not ended by another engine thread (those are gil_contention's), slow wait syscalls of the step thread,
and the time between steps when the step thread was neither stepping nor idle (for a live window: only while a
heartbeat shows requests in flight). The step thread's usual sleep per step is discounted.
"""
from __future__ import annotations

from collections import Counter

from gpusleuth.agent.diagnosis.causes import who
from gpusleuth.agent.diagnosis.context import Context, Finding, cover
from gpusleuth.agent.diagnosis.detectors.common import ms, spans
from gpusleuth.agent.diagnosis.detectors.sleeps import is_engine_waker, sleeps, usual_sleep
from gpusleuth.agent.diagnosis.intervals import total
from gpusleuth.probes.kernel.syscall_table import WAIT_SYSCALLS

CAUSE = "engine_stall"


def _gaps(ctx: Context) -> list[tuple[int, int]]:
    out = []
    for part in ctx.engine_parts():
        if part.name != "steps" or (ctx.engine.in_flight_at(part.end_ns) or 0) > 0:
            out += part.gaps
    return out


def detect(ctx: Context) -> list[Finding]:
    slept = [e for e in sleeps(ctx) if not is_engine_waker(ctx, e)]
    calls = [e for e in ctx.on_step_thread("slow_syscall") if e.attrs.get("syscall") in WAIT_SYSCALLS]
    gaps = _gaps(ctx)
    ivs = spans(slept + calls) + gaps
    if not ivs:
        return []
    got = cover(ctx, ivs, ctx.engine_parts())
    if not got:
        return []
    discount = usual_sleep(ctx)
    names: Counter = Counter()
    for e in calls:
        names[str(e.attrs.get("syscall"))] += e.end_ns - e.start_ns
    tid = next(iter(ctx.step_tids()), 0)
    comm = (slept + calls)[0].comm if slept or calls else "step thread"
    text = f"{comm} (pid {ctx.pid}, tid {tid}) stopped stepping for {ms(total(ivs))} while requests were in flight"
    if slept:
        text += f": asleep {ms(total(spans(slept)))} in {len(slept)} waits"
    if names:
        text += f"; in {', '.join(f'{n} {ms(v)}' for n, v in names.most_common(2))}"
    if gaps:
        text += f"; {ms(total(gaps))} with no step running and the loop not idle"
    return [Finding(CAUSE, who(ctx.pid, comm, tid, syscall=names.most_common(1)[0][0] if names else None), text,
                    intervals=got, discount=discount,
                    figures={"sleeps": len(slept), "gap_ms": round(total(gaps) / 1e6, 3),
                             "syscalls": {n: round(v / 1e6, 3) for n, v in names.items()}})]
