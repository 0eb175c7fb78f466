"""gpu_error: the request's GPU reported an XID or an ECC error while it ran (or just before).

Evidence: `gpu_xid` / `gpu_*ecc*` / `gpu_lost` events of that GPU (by NVML index or UUID). The steps that ran from
the error on are credited with their excess.
"""
from __future__ import annotations

from gpusleuth.agent.diagnosis.causes import who
from gpusleuth.agent.diagnosis.context import Context, Finding
from gpusleuth.agent.diagnosis.detectors.gpus import gpu_steps, step_excess

CAUSE = "gpu_error"
KINDS = ("gpu_xid", "gpu_double_bit_ecc", "gpu_single_bit_ecc_storm", "gpu_lost")
BEFORE_NS = 1_000_000_000


def detect(ctx: Context) -> list[Finding]:
    out = []
    for gpu, steps in gpu_steps(ctx).items():
        lo, hi = steps[0].start_ns - BEFORE_NS, steps[-1].end_ns
        uuid = steps[0].gpu_uuid
        errors = [e for k in KINDS for e in ctx.events(k, lo, hi)
                  if int(e.attrs.get("gpu", -1)) == gpu or (uuid and e.attrs.get("uuid") == uuid)]
        if not errors:
            continue
        first = min(e.start_ns for e in errors)
        amounts: dict[str, float] = {}
        mine = {id(s) for s in steps}
        for part in ctx.engine_parts():
            ns = sum(step_excess(ctx, s) for s in part.own + part.waited
                     if id(s) in mine and s.end_ns >= first - BEFORE_NS)
            if ns:
                amounts[part.name] = ns
        e0 = errors[0]
        what = ", ".join(sorted({f"XID {e.attrs.get('xid')} ({e.attrs.get('name', '?')})" if e.kind == "gpu_xid"
                                 else e.kind[4:] for e in errors}))
        text = f"GPU {gpu} reported {what} during the request"
        if e0.pid:
            text += f" (process {e0.comm}, pid {e0.pid})"
        out.append(Finding(CAUSE, who(e0.pid or ctx.pid, e0.comm or ctx.engine.comm, gpu=gpu, gpu_uuid=uuid), text,
                           amounts=amounts, figures={"gpu": gpu, "errors": len(errors)}))
    return out
