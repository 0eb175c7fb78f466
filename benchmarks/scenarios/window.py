"""One window: a clean gap, then the fault held for its length with the agent polled throughout, then what the
agent said about every request that overlapped it. Times are CLOCK_MONOTONIC ns, the agent's clock."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from agentq import AgentQuery
from collect import collect
from detect import Detector
from fault import Fault
from hostcpu import HostMeter
from stack import Stack

MAX_DRAIN_S = 30.0  # a request still unfinished this long after the fault is left out (and counted)
STUCK_S = 1.0  # a steady request in flight longer than this means the engine still works off a backlog


@dataclass
class Timing:
    gap_s: float = 4.0
    fault_s: float = 5.0
    settle_s: float = 2.5  # after the fault: probes poll every 1 s, requests in flight finish
    warmup_s: float = 8.0


@dataclass
class Ctx:
    stack: Stack
    q: AgentQuery
    meter: HostMeter
    timing: Timing
    expected: dict[str, float] = field(default_factory=dict)  # normal e2e ms of the burst shapes, by tag
    clean_e2e: list[float] = field(default_factory=list)  # e2e ms of this scenario's clean requests so far


def _sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.monotonic()))


def run_window(ctx: Ctx, fault: Fault, level: str, rep: int, gap_start_ns: int) -> dict[str, Any]:
    """Inject `fault` at `level` once; returns the window's record (truth, host load, detection, requests)."""
    stack, t = ctx.stack, ctx.timing
    _sleep_until(gap_start_ns / 1e9 + t.gap_s)
    params = fault.levels[level]
    gap_end_ns = time.monotonic_ns()  # a fault's own preparation in start() is neither clean nor fault time
    ctx.meter.start()
    culprit = fault.start(stack, params)
    onset_ns = time.monotonic_ns()
    engine_pids = {stack.engine.pid, *stack.engine.ranks()}
    det = Detector(ctx.q, engine_pids, onset_ns)
    try:
        det.poll_until(onset_ns / 1e9 + t.fault_s)
        host = ctx.meter.stop()  # before the fault's actors stop: their CPU is ours, not the host's
    finally:
        end_ns = time.monotonic_ns()
        injected = fault.stop(stack)
    det.poll_until(time.monotonic() + t.settle_s)
    num_unfinished = _drain(stack, end_ns, det)
    win = {"scenario": fault.name, "level": level, "rep": rep, "cause": fault.cause, "params": params,
           "summary": fault.summary, "setup": stack.setup_name, "gap_start_ns": gap_start_ns, "gap_end_ns": gap_end_ns, "onset_ns": onset_ns,
           "end_ns": end_ns, "culprit": culprit, "injected": injected, "host": host, "named": det.named,
           "unfinished": num_unfinished}
    collect(ctx.q, stack.load.read(), win, ctx.expected, ctx.clean_e2e, keep_example=rep == 0)
    return win


def _drain(stack: Stack, end_ns: int, det: Detector) -> int:
    """Wait until every request sent before the fault ended has finished and no later one has waited over
    STUCK_S (the backlog is gone), still polling the agent (a queued request's verdict comes when it finishes);
    returns how many of the fault's requests never finished."""
    deadline = time.monotonic() + MAX_DRAIN_S
    while True:
        stack.load.read()
        pending = stack.load.num_pending(end_ns)
        is_backlogged = stack.load.num_pending(time.monotonic_ns() - int(STUCK_S * 1e9)) > 0
        if (not pending and not is_backlogged) or time.monotonic() > deadline:
            return pending
        det.poll_until(time.monotonic() + 0.25)


def calibrate(ctx: Ctx, shapes: dict[str, tuple[int, int]]) -> None:
    """Normal e2e of the bursts' request shapes: each sent alone twice, next to the steady load."""
    load = ctx.stack.load
    for tag, (prompt, out) in shapes.items():
        times = []
        for _ in range(2):
            start_ns = time.monotonic_ns()
            load.burst(1, prompt, out, f"calib-{tag}")
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                done = [r for r in load.read() if r["tag"] == f"calib-{tag}" and r["t_send_ns"] >= start_ns]
                if done:
                    times.append((done[0]["t_done_ns"] - done[0]["t_send_ns"]) / 1e6)
                    break
                time.sleep(0.1)
        if times:
            ctx.expected[tag] = sorted(times)[0]
