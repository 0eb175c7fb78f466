"""memory_reclaim: the thread doing the request's work had to free memory itself (direct reclaim) or wait for
pages to come back (major faults), because its cgroup or the host ran short of memory.

Evidence: `direct_reclaim` events of the path's threads, and their D-state waits outside syscalls while the
process's major-fault count grew (`mm.faults{kind=major}`). The culprit is the engine process and its memory
cgroup, with the cgroup's memory pressure where sampled.
"""
from __future__ import annotations

from gpusleuth.agent.diagnosis.causes import who
from gpusleuth.agent.diagnosis.context import Context, Finding
from gpusleuth.agent.diagnosis.detectors.common import claims, ms, path_events, spans
from gpusleuth.agent.diagnosis.detectors.faults import is_fault_wait, major_faults
from gpusleuth.agent.diagnosis.intervals import total

CAUSE = "memory_reclaim"
PRESSURE_SERIES = "cgroup.memory.pressure_some_us"


def detect(ctx: Context) -> list[Finding]:
    r_eng, r_srv = path_events(ctx, "direct_reclaim")
    f_eng, f_srv = path_events(ctx, "offcpu", lambda e: is_fault_wait(ctx, e))
    every = r_eng + r_srv + f_eng + f_srv
    if not every:
        return []
    got = claims(ctx, spans(r_eng + f_eng), spans(r_srv + f_srv))
    lo, hi = ctx.window()
    faults = major_faults(ctx, ctx.pid, lo, hi)
    reclaimed = sum(int(e.attrs.get("nr_reclaimed") or 0) for e in r_eng + r_srv)
    cgroup = ctx.host.cgroups.get(ctx.pid)
    victim = every[0]
    text = (f"{victim.comm} (pid {victim.pid}, tid {victim.tid}) spent {ms(total(spans(r_eng + r_srv)))} in "
            f"direct reclaim ({len(r_eng + r_srv)} times, {reclaimed} pages reclaimed) and "
            f"{ms(total(spans(f_eng + f_srv)))} waiting on {faults:.0f} major faults")
    pressure = ctx.samples.series(PRESSURE_SERIES, lo, hi + 1_500_000_000, pid=str(ctx.pid))
    if pressure:
        text += f"; memory pressure (some) {max(v for _, pts in pressure for _, v in pts) / 1e3:.0f} ms per poll"
    if cgroup:
        text += f" in cgroup {cgroup}"
    return [Finding(CAUSE, who(ctx.pid, ctx.engine.comm or victim.comm, victim.tid, cgroup=cgroup), text,
                    intervals=got, figures={"reclaims": len(r_eng + r_srv), "major_faults": faults,
                                            "pages_reclaimed": reclaimed})]
