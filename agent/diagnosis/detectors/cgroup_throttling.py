"""cgroup_throttling: the engine's cgroup ran out of CPU quota (CFS bandwidth), so its threads stayed runnable
while their CPU sat idle until the next period.

Evidence: the step thread's run-queue waits while the engine's cgroup reported throttling (`cgroup_throttle`
events: nr_throttled grew in a poll). Where the cgroup was throttled for a good part of the poll (>= THROTTLED_SHARE
of it) the whole wait is the quota's: a throttled cgroup cannot run even if its CPU is free, so tasks that ran
there meanwhile took a CPU nobody in the cgroup could use. Otherwise only the wait's idle share (`idle_ns`) is.
Without throttle events an idle share is a migration lag, not quota, and is left unexplained. The culprit is the
cgroup (with its quota), named with the engine process it holds.
"""
from __future__ import annotations

from gpusleuth.agent.diagnosis.causes import who
from gpusleuth.agent.diagnosis.context import Context, Finding
from gpusleuth.agent.diagnosis.detectors.common import claims, ms, path_events
from gpusleuth.probes.records import Event

CAUSE = "cgroup_throttling"
SLACK_NS = 1_500_000_000  # throttle events cover a poll interval: accept waits this close to one
THROTTLED_SHARE = 0.1


def _throttles(ctx: Context) -> list[Event]:
    """Throttle events of a cgroup holding one of the engine's processes."""
    lo, hi = ctx.window()
    pids = ctx.pids()
    cgroups = {ctx.host.cgroups.get(p) for p in pids} - {None}
    return [e for e in ctx.events("cgroup_throttle", lo - SLACK_NS, hi + SLACK_NS)
            if e.pid in pids or pids & set(e.attrs.get("pids") or ()) or e.attrs.get("cgroup") in cgroups]


def _throttled_part(e: Event, heavy: list[tuple[int, int]]) -> tuple[int, int]:
    """The part of a run-queue wait the quota explains: all of it inside a heavily throttled poll, else its idle
    share (cut from its end)."""
    if any(a <= e.end_ns and e.start_ns <= b for a, b in heavy):
        return e.start_ns, e.end_ns
    idle = min(int(e.attrs.get("idle_ns") or 0), e.end_ns - e.start_ns)
    return e.end_ns - idle, e.end_ns


def detect(ctx: Context) -> list[Finding]:
    throttles = _throttles(ctx)
    if not throttles:
        return []
    near = [(t.start_ns - SLACK_NS, t.end_ns + SLACK_NS) for t in throttles]
    heavy = [(t.start_ns, t.end_ns) for t in throttles
             if int(t.attrs.get("ns") or 0) >= THROTTLED_SHARE * max(1, t.end_ns - t.start_ns)]

    def throttled(e: Event) -> bool:
        in_heavy = any(a <= e.end_ns and e.start_ns <= b for a, b in heavy)
        return in_heavy or (int(e.attrs.get("idle_ns") or 0) > 0 and any(a <= e.end_ns and e.start_ns <= b
                                                                         for a, b in near))
    eng, srv = path_events(ctx, "runq_delay", throttled)
    if not eng and not srv:
        return []
    got = claims(ctx, [_throttled_part(e, heavy) for e in eng], [_throttled_part(e, heavy) for e in srv])
    t0 = max(throttles, key=lambda t: int(t.attrs.get("ns") or 0))
    a = t0.attrs
    cgroup = str(a.get("cgroup") or ctx.host.cgroups.get(ctx.pid) or "?")
    quota, period = a.get("quota_us"), a.get("period_us")
    held = sum(b - a_ for a_, b in (_throttled_part(e, heavy) for e in eng + srv))
    victim = (eng + srv)[0]
    text = (f"cgroup {cgroup} of {ctx.engine.comm or victim.comm} (pid {ctx.pid}) was throttled "
            f"{sum(int(t.attrs.get('periods') or 0) for t in throttles)} periods for "
            f"{ms(sum(int(t.attrs.get('ns') or 0) for t in throttles))}"
            + (f" (quota {quota} us per {period} us)" if quota else "")
            + f"; {victim.comm} (tid {victim.tid}) waited {ms(held)} runnable while its cgroup could not run")
    return [Finding(CAUSE, who(ctx.pid, ctx.engine.comm or victim.comm, cgroup=cgroup), text, intervals=got,
                    figures={"cgroup": cgroup, "quota_us": quota, "period_us": period,
                             "throttled_wait_ms": round(held / 1e6, 3)})]
