"""process_frozen: the engine was stopped (SIGSTOP, a debugger) or frozen by its cgroup's freezer, so nothing of it
ran at all.

Evidence: `offcpu` events in state T/t/frozen of the engine's threads (step thread for the engine parts, any
other thread for arrival/stream), and, while it lasts, the sched snapshot's ongoing states (handed in by the live
diagnosis as open-ended events). The culprit is the frozen process (and its cgroup when the freezer did it); the
task that woke it again, where seen, is named in the evidence. A request received right after the engine resumed
has a backlog part (budget.py): the stop is on its path there too.
"""
from __future__ import annotations

from gpusleuth.agent.diagnosis.causes import who
from gpusleuth.agent.diagnosis.context import Context, Finding, cover
from gpusleuth.agent.diagnosis.detectors.common import claims, ms, path_events, spans
from gpusleuth.agent.diagnosis.intervals import total
from gpusleuth.probes.records import Event

CAUSE = "process_frozen"
STATES = frozenset({"T", "t", "frozen"})


def _frozen(e: Event) -> bool:
    return str(e.attrs.get("state")) in STATES


def detect(ctx: Context) -> list[Finding]:
    live = ctx.budget.parts.get("steps")
    eng, srv = path_events(ctx, "offcpu", _frozen)
    if live is not None:  # a live window: any thread stopped, the server's too: it cannot even receive work
        srv = [e for e in ctx.off_step_thread("offcpu") if _frozen(e)]
    stops = eng + srv
    if not stops:
        return []
    got = claims(ctx, spans(eng), spans(srv))
    if live is not None:
        got.update(cover(ctx, spans(stops), [live], busy_only=False))
    e0 = max(stops, key=lambda e: e.end_ns - e.start_ns)
    states = sorted({str(e.attrs.get("state")) for e in stops})
    is_freezer = "frozen" in states
    cgroup = ctx.host.cgroups.get(e0.pid) if is_freezer else None
    how = "frozen by its cgroup's freezer" + (f" ({cgroup})" if cgroup else "") if is_freezer else \
        "stopped (state " + "/".join(states) + ")"
    text = f"{e0.comm} (pid {e0.pid}, tid {e0.tid}) was {how} for {ms(total(spans(stops)))}"
    if any(e.attrs.get("is_ongoing") for e in stops):
        text += ", and still is"
    wakers = {(int(e.attrs.get("waker_pid") or 0), str(e.attrs.get("waker_comm") or "")) for e in stops}
    wakers = sorted(w for w in wakers if w[0] > 0)
    if wakers:
        text += "; resumed by " + ", ".join(f"{c} (pid {p})" for p, c in wakers[:3])
    comm = ctx.host.comms.get(e0.pid) or ctx.engine.comm or e0.comm
    return [Finding(CAUSE, who(e0.pid, comm, e0.tid, cgroup=cgroup), text, intervals=got,
                    figures={"stops": len(stops), "states": states, "stopped_ms": round(total(spans(stops)) / 1e6, 3)})]
