"""gc_pause: a Python garbage collection in the engine process stopped the step loop (the collector holds the GIL,
so it stops every Python thread, whichever thread runs it).

Evidence: the engine's `gc` spans (gc.callbacks start -> stop) inside the request's engine parts.
"""
from __future__ import annotations

from gpusleuth.agent.diagnosis.causes import who
from gpusleuth.agent.diagnosis.context import Context, Finding, cover
from gpusleuth.agent.diagnosis.detectors.common import ms, spans

CAUSE = "gc_pause"
MIN_GC_NS = 1_000_000  # young-generation collections take microseconds: not worth a claim


def detect(ctx: Context) -> list[Finding]:
    lo, hi = ctx.window()
    gcs = [g for g in ctx.engine.gcs_within(lo, hi) if g.end_ns - g.start_ns >= MIN_GC_NS]
    if not gcs:
        return []
    got = cover(ctx, spans(gcs), ctx.engine_parts())
    if not got:
        return []
    worst = max(gcs, key=lambda g: g.end_ns - g.start_ns)
    gens = sorted({int(g.attrs.get("generation") or 0) for g in gcs})
    collected = sum(int(g.attrs.get("collected") or 0) for g in gcs)
    tid = int(worst.attrs.get("tid") or worst.tid or 0)
    text = (f"{len(gcs)} garbage collections (generation {', '.join(map(str, gens))}) in "
            f"{ctx.engine.comm or worst.comm} (pid {worst.pid}) took {ms(sum(g.end_ns - g.start_ns for g in gcs))}, "
            f"longest {ms(worst.end_ns - worst.start_ns)} on tid {tid}; {collected} objects collected")
    return [Finding(CAUSE, who(worst.pid, ctx.engine.comm or worst.comm, tid), text, intervals=got,
                    figures={"collections": len(gcs), "generations": gens, "collected": collected})]
