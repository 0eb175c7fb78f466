"""Shared by engine_stall and gil_contention: the step thread's sleeps (S state) while it had work, split by who
woke it. A sleep ended by another thread of the engine process is a wait for that thread (the GIL, a lock); any
other sleep (a timer, a wait syscall) is the loop stalling, except a short one among many sleeps handed over by
other Python threads:
CPython's GIL wait is a timed wait that times out every switch interval (5 ms) to ask the holder to let go, and a
timeout's "waker" is whatever task the timer interrupt found running. Idle waits (idle spans) never count.
"""
from __future__ import annotations

from gpusleuth.agent.diagnosis.context import Context
from gpusleuth.probes import procname
from gpusleuth.probes.records import Event


def is_engine_waker(ctx: Context, e: Event) -> bool:
    """Woken by another thread of the engine's own process (`waker_pid` is the waker's process, `waker_tid` its
    thread; an older probe gave only a thread id as `waker_pid`)."""
    wtid = int(e.attrs.get("waker_tid") or 0)
    wpid = int(e.attrs.get("waker_pid") or 0)
    if wpid <= 0 or (wtid or wpid) == e.tid:
        return False
    if not wtid and wpid in ctx.host.tids:
        return ctx.host.tids[wpid] in ctx.pids()
    return wpid in ctx.pids()


GIL_TIMEOUT_NS = 10_000_000  # twice CPython's default switch interval
GIL_BOUND_HANDOFFS = 3  # this many sleeps handed over by other engine threads (not the HTTP server's, which hands
# the GIL back after each response write) on a request's path: its step thread is waiting on the GIL


def sleeps(ctx: Context) -> list[Event]:
    return [e for e in ctx.on_step_thread("offcpu") if str(e.attrs.get("state")) == "S"]


def split_sleeps(ctx: Context) -> tuple[list[Event], list[Event]]:
    """(waits for another engine thread, stalls) among the step thread's sleeps on the budget's path."""
    every = sleeps(ctx)
    handed = [e for e in every if is_engine_waker(ctx, e)]
    other = [e for e in every if not is_engine_waker(ctx, e)]
    busy = [e for e in handed if e.attrs.get("waker_comm") != procname.HTTP]  # the server's handoffs are usual
    if len(busy) >= GIL_BOUND_HANDOFFS:  # GIL-bound: its short timer wakeups are GIL timeouts
        timeouts = [e for e in other if e.end_ns - e.start_ns <= GIL_TIMEOUT_NS]
        return handed + timeouts, [e for e in other if e.end_ns - e.start_ns > GIL_TIMEOUT_NS]
    return handed, other


def usual_sleep(ctx: Context) -> dict[str, float]:
    """Per engine part: how long its steps normally sleep (baseline), plus rank 0's waits in TP collectives and
    for GPU time above baseline (gpu_contention and gpu_clocks explain those)."""
    sb = ctx.baseline.rank(0)
    out: dict[str, float] = {}
    for part in ctx.engine_parts():
        ns = 0.0
        for s in part.own + part.waited:
            cost = sb.expected(s.num_decode, s.num_prefill_tokens)
            ns += cost.sleep_ns + (s.tp_wait_ms or 0.0) * 1e6
            if s.measured_gpu_ms is not None and cost.gpu_ms is not None:  # asleep waiting for a slow GPU
                ns += max(0.0, s.measured_gpu_ms - cost.gpu_ms) * 1e6
        out[part.name] = ns
    return out
