"""gil_contention: the step thread waited for the GIL: it slept on a futex until another Python thread of the engine,
which had been running, let go.

Evidence: S-state `offcpu` events of the step thread ended by another thread of the engine process (the GIL holder
hands the lock over with a futex wake), and the short timer wakeups among them (sleeps.py). The culprit is the
thread that woke it most (by time), i.e. the thread holding the GIL. The step thread's usual sleeps per step are
discounted (a thread pool's waits look alike)."""
from __future__ import annotations

from collections import Counter

from gpusleuth.agent.diagnosis.causes import who
from gpusleuth.agent.diagnosis.context import Context, Finding, cover
from gpusleuth.agent.diagnosis.detectors.common import ms, spans
from gpusleuth.agent.diagnosis.detectors.sleeps import split_sleeps, usual_sleep
from gpusleuth.agent.diagnosis.intervals import total

CAUSE = "gil_contention"


def detect(ctx: Context) -> list[Finding]:
    waits = split_sleeps(ctx)[0]
    if not waits:
        return []
    got = cover(ctx, spans(waits), ctx.engine_parts())
    if not got:
        return []
    holders: Counter = Counter()
    names: dict[int, str] = {}
    for e in waits:
        if int(e.attrs.get("waker_pid") or 0) not in ctx.pids():
            continue  # a GIL timeout: its waker is not the holder
        wp = int(e.attrs.get("waker_tid") or e.attrs.get("waker_pid") or 0)
        holders[wp] += e.end_ns - e.start_ns
        names[wp] = str(e.attrs.get("waker_comm") or "?")
    if not holders:
        return []
    top, _ = holders.most_common(1)[0]
    victim = waits[0]
    text = (f"{victim.comm} (pid {victim.pid}, tid {victim.tid}) waited {ms(total(spans(waits)))} in "
            f"{len(waits)} futex sleeps for other threads of the engine to release the GIL: "
            + ", ".join(f"{names[p]} (tid {p}) {ms(n)}" for p, n in holders.most_common(3)))
    return [Finding(CAUSE, who(ctx.pid, names[top], top), text, intervals=got, discount=usual_sleep(ctx),
                    figures={"waits": len(waits), "holders": {str(p): round(n / 1e6, 3) for p, n in holders.items()}})]
