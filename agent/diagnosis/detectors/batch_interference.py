"""batch_interference: the request's decode steps were slowed by other requests' prompts chunked into them.

The budget already knows how much longer its decode steps were expected to take because of the prefill tokens in
them (the cost of the step's shape less that of the same decode batch without prefill); what this engine's
requests usually see is not excess. The rest is this finding's amount; the prefilling requests are named.
"""
from __future__ import annotations

from collections import Counter

from gpusleuth.agent.diagnosis.causes import who
from gpusleuth.agent.diagnosis.context import Context, Finding
from gpusleuth.agent.diagnosis.detectors.common import ms

CAUSE = "batch_interference"


def detect(ctx: Context) -> list[Finding]:
    part = ctx.budget.parts.get("decode")
    if part is None:
        return []
    extra = part.interference_ns - part.usual_interference_ns
    if extra <= 0:
        return []
    rid = ctx.budget.request.request_id
    mixed = [s for s in part.own if s.num_prefill_tokens]
    who_ids: Counter = Counter()
    for s in mixed:
        for other in s.prefill_ids:
            if other != rid:
                who_ids[other] += s.num_prefill_tokens
    ids = [r for r, _ in who_ids.most_common(5)]
    text = (f"{len(mixed)} of the request's {len(part.own)} decode steps also ran "
            f"{sum(s.num_prefill_tokens for s in mixed)} prompt tokens of other requests, "
            f"{ms(part.interference_ns)} more than decode alone ({ms(part.usual_interference_ns)} is usual here)"
            + (f"; prompts of {', '.join(ids[:3])}" if ids else ""))
    return [Finding(CAUSE, who(ctx.pid, ctx.engine.comm, request_ids=ids), text, amounts={"decode": extra},
                    figures={"mixed_steps": len(mixed), "interference_ms": round(part.interference_ns / 1e6, 3)})]
