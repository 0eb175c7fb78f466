"""cpu_contention: the thread doing the request's work was runnable but another task had its CPU.

Evidence: `runq_delay` events of the step thread (for queue/prefill/decode) or of the engine's server threads
(arrival/stream). The culprit is the task that took the most CPU time on that CPU during the waits (the probe's
`culprits`, pid 0 never counted); where the CPU sat idle instead (`idle_ns`), the wait is not contention and is
left to cgroup_throttling. Probes without culprits name the task switched out before the thread ran (`prev_pid`),
marked as a guess.
"""
from __future__ import annotations

from gpusleuth.agent.diagnosis.causes import who
from gpusleuth.agent.diagnosis.context import Context, Finding
from gpusleuth.agent.diagnosis.detectors.common import Tally, claims, ms, path_events
from gpusleuth.agent.diagnosis.intervals import Interval
from gpusleuth.probes.records import Event

CAUSE = "cpu_contention"


def busy_part(e: Event) -> Interval:
    """The part of a wait when the CPU ran someone else (the idle share cut from its end)."""
    idle = min(int(e.attrs.get("idle_ns") or 0), e.end_ns - e.start_ns)
    return e.start_ns, e.end_ns - idle


def _tally(waits: list[Event]) -> tuple[Tally, bool]:
    t, guessed = Tally(), False
    for e in waits:
        culprits = e.attrs.get("culprits")
        if culprits:
            for c in culprits:
                t.add(int(c.get("pid") or 0), int(c.get("tid") or 0), str(c.get("comm") or "?"),
                      float(c.get("ns") or 0))
        elif e.attrs.get("prev_pid"):
            guessed = True
            t.add(int(e.attrs["prev_pid"]), int(e.attrs["prev_pid"]), str(e.attrs.get("prev_comm") or "?"),
                  float(e.end_ns - e.start_ns))
    return t, guessed


def detect(ctx: Context) -> list[Finding]:
    eng, srv = path_events(ctx, "runq_delay")
    waits = eng + srv
    if not waits:
        return []
    got = claims(ctx, [busy_part(e) for e in eng], [busy_part(e) for e in srv])
    tally, guessed = _tally(waits)
    top = tally.top(1)
    victim = waits[0]
    cpus = sorted({int(e.attrs["cpu"]) for e in waits if e.attrs.get("cpu") is not None})
    total = sum(b - a for a, b in (busy_part(e) for e in waits))
    text = (f"{victim.comm} (pid {victim.pid}, tid {victim.tid}) waited {ms(total)} for a CPU in {len(waits)} "
            f"waits (longest {ms(max(e.end_ns - e.start_ns for e in waits))}"
            + (f", CPU {', '.join(map(str, cpus))}" if cpus else "") + ")")
    if top:
        text += (f"; the task switched out before it ran (a guess: no CPU-time culprits): {tally.text(1)}"
                 if guessed else f"; on that CPU meanwhile: {tally.text()}")
        pid, tid, comm, _ = top[0]
        culprit = who(pid, comm, tid, cpu=cpus[0] if len(cpus) == 1 else None)
    else:
        text += "; no other task was seen on the CPU"
        culprit = who(victim.pid, victim.comm, victim.tid)
    return [Finding(CAUSE, culprit, text, intervals=got,
                    figures={"waits": len(waits), "wait_ms": round(total / 1e6, 3), "cpus": cpus,
                             "culprits": [{"pid": p, "tid": t, "comm": c, "ms": round(n / 1e6, 3)}
                                          for p, t, c, n in tally.top()], "is_guess": guessed})]
