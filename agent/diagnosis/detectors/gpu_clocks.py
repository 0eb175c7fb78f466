"""gpu_clocks: the request's GPU ran below the clocks it usually runs this engine at (power or thermal capping,
a clock-event reason), so its steps took longer.

Blamed only when the SM clock sampled during the request's steps was below the engine's baseline clock (the
median SM clock seen during its clean steps) on that same GPU; each step is credited dur x (1 - clock/baseline),
at most its excess. The clock-event reasons in force are named (gpu_throttle events on that GPU). While another
process loads the GPU, lower clocks are part of its contention and are left to gpu_contention.
"""
from __future__ import annotations

from gpusleuth.agent.diagnosis.causes import who
from gpusleuth.agent.diagnosis.context import Context, Finding
from gpusleuth.agent.diagnosis.detectors.common import ms
from gpusleuth.agent.diagnosis.detectors.gpu_contention import MIN_FOREIGN_PCT
from gpusleuth.agent.diagnosis.detectors.gpus import CLOCK_SERIES, gpu_steps, sm_shares, step_excess

CAUSE = "gpu_clocks"
MIN_DROP = 0.05  # clocks within 5 % of the baseline are normal boost variation
POLL_SLACK_NS = 1_000_000_000


def _clock_at(ctx: Context, gpu: int, lo: int, hi: int) -> float | None:
    got = ctx.samples.series(CLOCK_SERIES, lo, hi + POLL_SLACK_NS, gpu=str(gpu))
    points = [v for _, pts in got for _, v in pts]
    return min(points) if points else None


def _reasons(ctx: Context, gpu: int, lo: int, hi: int) -> list[str]:
    names: set[str] = set()
    for e in ctx.events("gpu_throttle", lo, hi):
        if int(e.attrs.get("gpu", -1)) == gpu:
            names.update(str(r) for r in e.attrs.get("reasons") or ())
    return sorted(names)


def detect(ctx: Context) -> list[Finding]:
    base = ctx.baseline.sm_clock_mhz.expected()
    if not base:
        return []
    out = []
    pids = ctx.pids()
    for gpu, steps in gpu_steps(ctx).items():
        shares = sm_shares(ctx, gpu, steps[0].start_ns, steps[-1].end_ns)
        if any(v >= MIN_FOREIGN_PCT for p, v in shares.items() if p not in pids):
            continue  # another process's load lowers the clocks too: that is gpu_contention's
        amounts: dict[str, float] = {}
        lowest = base
        mine = {id(s) for s in steps}
        for part in ctx.engine_parts():
            for s in part.own + part.waited:
                if id(s) not in mine:
                    continue
                clock = _clock_at(ctx, gpu, s.start_ns, s.end_ns)
                if clock is None or clock >= base * (1 - MIN_DROP):
                    continue
                lowest = min(lowest, clock)
                amounts[part.name] = amounts.get(part.name, 0.0) + min(step_excess(ctx, s),
                                                                      s.dur_ns * (1 - clock / base))
        if not amounts:
            continue
        lo, hi = steps[0].start_ns, steps[-1].end_ns
        reasons = _reasons(ctx, gpu, lo, hi)
        text = (f"GPU {gpu} ran at {lowest:.0f} MHz during the request's steps, below the engine's usual "
                f"{base:.0f} MHz" + (f" (clock-event reasons: {', '.join(reasons)})" if reasons else "")
                + f"; {ms(sum(amounts.values()))} of step time lost")
        out.append(Finding(CAUSE, who(ctx.pid, ctx.engine.comm, gpu=gpu, reasons=reasons or None), text,
                           amounts=amounts, figures={"gpu": gpu, "clock_mhz": lowest, "baseline_mhz": base}))
    return out
