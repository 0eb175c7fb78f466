"""cgroup_throttling: the engine's cgroup ran out of CPU quota (CFS bandwidth), so its threads stayed runnable
while their CPU sat idle until the next period.

Evidence: the idle share (`idle_ns`) of the step thread's run-queue waits, when the engine's cgroup reported
throttling (`cgroup_throttle` events: nr_throttled grew) around them. Without throttle events the idle share is a
migration lag, not quota, and is left unexplained. The culprit is the cgroup (with its quota), named with the
engine process it holds.
"""
from __future__ import annotations

from gpusleuth.agent.diagnosis.causes import who
from gpusleuth.agent.diagnosis.context import Context, Finding
from gpusleuth.agent.diagnosis.detectors.common import claims, ms, path_events
from gpusleuth.probes.records import Event

CAUSE = "cgroup_throttling"
SLACK_NS = 1_500_000_000  # throttle events cover a poll interval: accept waits this close to one


def _throttles(ctx: Context) -> list[Event]:
    """Throttle events of a cgroup holding one of the engine's processes."""
    lo, hi = ctx.window()
    pids = ctx.pids()
    cgroups = {ctx.host.cgroups.get(p) for p in pids} - {None}
    return [e for e in ctx.events("cgroup_throttle", lo - SLACK_NS, hi + SLACK_NS)
            if e.pid in pids or pids & set(e.attrs.get("pids") or ()) or e.attrs.get("cgroup") in cgroups]


def _idle_part(e: Event) -> tuple[int, int]:
    idle = min(int(e.attrs.get("idle_ns") or 0), e.end_ns - e.start_ns)
    return e.end_ns - idle, e.end_ns


def detect(ctx: Context) -> list[Finding]:
    throttles = _throttles(ctx)
    if not throttles:
        return []
    near = [(t.start_ns - SLACK_NS, t.end_ns + SLACK_NS) for t in throttles]

    def throttled(e: Event) -> bool:
        return int(e.attrs.get("idle_ns") or 0) > 0 and any(a <= e.end_ns and e.start_ns <= b for a, b in near)
    eng, srv = path_events(ctx, "runq_delay", throttled)
    if not eng and not srv:
        return []
    got = claims(ctx, [_idle_part(e) for e in eng], [_idle_part(e) for e in srv])
    t0 = max(throttles, key=lambda t: int(t.attrs.get("ns") or 0))
    a = t0.attrs
    cgroup = str(a.get("cgroup") or ctx.host.cgroups.get(ctx.pid) or "?")
    quota = a.get("quota_us")
    period = a.get("period_us")
    idle = sum(b - a_ for a_, b in (_idle_part(e) for e in eng + srv))
    victim = (eng + srv)[0]
    text = (f"cgroup {cgroup} of {ctx.engine.comm or victim.comm} (pid {ctx.pid}) was throttled "
            f"{sum(int(t.attrs.get('periods') or 0) for t in throttles)} periods for "
            f"{ms(sum(int(t.attrs.get('ns') or 0) for t in throttles))}"
            + (f" (quota {quota} us per {period} us)" if quota else "")
            + f"; {victim.comm} (tid {victim.tid}) sat runnable on an idle CPU for {ms(idle)}")
    return [Finding(CAUSE, who(ctx.pid, ctx.engine.comm or victim.comm, cgroup=cgroup), text, intervals=got,
                    figures={"cgroup": cgroup, "quota_us": quota, "period_us": period,
                             "idle_ms": round(idle / 1e6, 3)})]
