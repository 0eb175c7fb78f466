"""Shared by the GPU detectors: which GPU (NVML index) a step ran on, and who else used it."""
from __future__ import annotations

from gpusleuth.agent.diagnosis.context import Context
from gpusleuth.agent.diagnosis.spans import Step

PROC_SERIES = "gpu.process.sm_util_pct"
CLOCK_SERIES = "gpu.sm_clock_mhz"
REASON_SERIES = "gpu.clock_event_reasons"
SAMPLE_SLACK_NS = 3_000_000_000  # per-process utilisation is sampled on the GPU probe's detail interval


def gpu_of(ctx: Context, step: Step) -> int | None:
    """The NVML index of the step's GPU (its UUID looked up in the GPU snapshot, else its CUDA ordinal)."""
    if step.gpu_uuid and step.gpu_uuid in ctx.host.gpu_index_by_uuid:
        return ctx.host.gpu_index_by_uuid[step.gpu_uuid]
    return step.gpu_index


def gpu_steps(ctx: Context) -> dict[int, list[Step]]:
    """The steps on the budget's path (rank 0: the ones it was in and the ones it waited through) by the GPU they
    ran on; CPU steps left out."""
    out: dict[int, list[Step]] = {}
    for part in ctx.engine_parts():
        for s in sorted(part.own + part.waited, key=lambda s: s.start_ns):
            g = gpu_of(ctx, s)
            if g is not None:
                out.setdefault(g, []).append(s)
    return out


def sm_shares(ctx: Context, gpu: int, lo: int, hi: int) -> dict[int, float]:
    """pid -> mean SM utilisation (%) on `gpu` over [lo - slack, hi + slack]: a sample is stamped when the probe
    read it and averages the time before, so the one that describes a request's steps may come after them."""
    out: dict[int, float] = {}
    window = (lo - SAMPLE_SLACK_NS, hi + SAMPLE_SLACK_NS)
    for labels, points in ctx.samples.series(PROC_SERIES, *window, gpu=str(gpu)):
        out[int(labels.get("pid", 0))] = sum(v for _, v in points) / len(points)
    return out


def step_excess(ctx: Context, s: Step) -> float:
    return max(0.0, s.dur_ns - ctx.baseline.rank(s.rank).expected(s.num_decode, s.num_prefill_tokens).dur_ns)
