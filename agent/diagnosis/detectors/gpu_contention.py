"""gpu_contention: another process used the request's GPU, so its steps' GPU work took longer.

Evidence: the steps' own GPU time (CUDA events, `gpu_ms` reported by a later step) above the shape's baseline, and
processes other than the engine with SM utilisation on that GPU (NVML per-process samples). Each step is credited
with its GPU time above baseline, at most its excess; steps without a GPU time get the measured steps' average
ratio. Steps the request waited through count too (a slower GPU also holds the queue). The culprit is the foreign
process with the largest SM share (pid, comm, share).
"""
from __future__ import annotations

from gpusleuth.agent.diagnosis.causes import who
from gpusleuth.agent.diagnosis.context import Context, Finding
from gpusleuth.agent.diagnosis.detectors.common import ms
from gpusleuth.agent.diagnosis.detectors.gpus import gpu_steps, sm_shares, step_excess

CAUSE = "gpu_contention"
MIN_FOREIGN_PCT = 5.0


def _credit(ctx: Context, steps) -> tuple[float, float, int]:
    """(ns credited, GPU ns above baseline, steps measured)."""
    sb = ctx.baseline.rank(0)
    measured = [s for s in steps if s.measured_gpu_ms is not None]
    above, credited, excess_measured = 0.0, 0.0, 0.0
    for s in measured:
        base = sb.expected(s.num_decode, s.num_prefill_tokens).gpu_ms
        if base is None:
            continue
        extra = max(0.0, (s.measured_gpu_ms - base) * 1e6)
        above += extra
        credited += min(extra, step_excess(ctx, s))
        excess_measured += step_excess(ctx, s)
    if not measured or above <= 0:
        return 0.0, 0.0, len(measured)
    ratio = credited / excess_measured if excess_measured else 0.0
    credited += ratio * sum(step_excess(ctx, s) for s in steps if s.measured_gpu_ms is None)
    return credited, above, len(measured)


def detect(ctx: Context) -> list[Finding]:
    out = []
    pids = ctx.pids()
    for gpu, steps in gpu_steps(ctx).items():
        lo, hi = steps[0].start_ns, steps[-1].end_ns
        shares = sm_shares(ctx, gpu, lo, hi)
        foreign = {p: v for p, v in shares.items() if p not in pids and v >= MIN_FOREIGN_PCT}
        if not foreign:
            continue
        credited, above, measured = _credit(ctx, steps)
        if credited <= 0:
            continue
        total = sum(shares.values()) or 1.0
        top = max(foreign, key=foreign.get)
        comm = ctx.host.comms.get(top, "?")
        amounts = _spread(ctx, steps, credited)
        text = (f"GPU {gpu}: the request's steps spent {ms(above)} more GPU time than usual ({measured} of "
                f"{len(steps)} steps measured); other processes on it: "
                + ", ".join(f"{ctx.host.comms.get(p, '?')} (pid {p}) {v / total:.0%} of SM time"
                            for p, v in sorted(foreign.items(), key=lambda kv: -kv[1])[:3])
                + f", the engine {sum(v for p, v in shares.items() if p in pids) / total:.0%}")
        out.append(Finding(CAUSE, who(top, comm, gpu=gpu, share=round(foreign[top] / total, 3)), text,
                           amounts=amounts, figures={"gpu": gpu, "gpu_above_ms": round(above / 1e6, 3),
                                                     "shares": {str(p): v for p, v in shares.items()}}))
    return out


def _spread(ctx: Context, steps, credited: float) -> dict[str, float]:
    """Credited ns over the parts, in proportion to the steps' excess in each."""
    per: dict[str, float] = {}
    ids = {id(s) for s in steps}
    for part in ctx.engine_parts():
        per[part.name] = sum(step_excess(ctx, s) for s in part.own + part.waited if id(s) in ids)
    total = sum(per.values()) or 1.0
    return {k: credited * v / total for k, v in per.items() if v > 0}
