"""queueing: the request waited for the engine while it was busy with others: in the queue behind a full batch,
an exhausted KV cache or a long prefill (head-of-line), or, once running, preempted out of the batch.

Amounts, not intervals: the normal cost of the steps it waited through (their expected cost by shape; anything
above that is the steps' own slowness, which other detectors explain), less the engine's usual queueing. The
request ids that held the engine are named: the prefills that ran while it waited, else the batch that ran.
"""
from __future__ import annotations

from collections import Counter

from gpusleuth.agent.diagnosis.budget import Part
from gpusleuth.agent.diagnosis.causes import who
from gpusleuth.agent.diagnosis.context import Context, Finding
from gpusleuth.agent.diagnosis.detectors.common import ms
from gpusleuth.agent.diagnosis.intervals import clip, merge, subtract
from gpusleuth.agent.diagnosis.spans import Step

CAUSE = "queueing"


def _normal_cost(ctx: Context, part: Part, steps: list[Step]) -> float:
    """What the steps it waited through normally cost, with the usual gap after each (the loop between them)."""
    sb = ctx.baseline.rank(0)
    ns = 0.0
    busy = []
    for s in steps:
        inside = clip(s.start_ns, s.end_ns, part.start_ns, part.end_ns)
        busy.append((max(s.start_ns, part.start_ns), min(s.end_ns, part.end_ns)))
        ns += min(inside, sb.expected(s.num_decode, s.num_prefill_tokens).dur_ns * inside / max(1, s.dur_ns))
    gaps = subtract(subtract([(part.start_ns, part.end_ns)], merge(busy)), merge(part.idle))
    usual_gap = ctx.baseline.part("gap").mean() or 0.0
    return ns + min(sum(b - a for a, b in gaps), usual_gap * len(steps))


def _holders(steps: list[Step], rid: str) -> tuple[Counter, Counter]:
    """Time of the waited steps by the prefills in them, and by every request in them."""
    prefills, batch = Counter(), Counter()
    for s in steps:
        for other in s.prefill_ids:
            if other != rid:
                prefills[other] += s.dur_ns
        for other in s.request_ids:
            if other != rid:
                batch[other] += s.dur_ns
    return prefills, batch


def detect(ctx: Context) -> list[Finding]:
    rid = ctx.budget.request.request_id
    amounts: dict[str, float] = {}
    waited: list[Step] = []
    for part in ctx.engine_parts():
        if part.name == "steps" or not part.waited:
            continue
        cost = _normal_cost(ctx, part, part.waited)
        if part.name == "queue":
            cost -= part.expected_ns
        if cost > 0:
            amounts[part.name] = cost
            waited += part.waited
    if not amounts:
        return []
    prefills, batch = _holders(waited, rid)
    held = prefills or batch
    ids = [r for r, _ in held.most_common(5)]
    running = max((s.num_running or 0) for s in waited)
    ahead = max((s.num_waiting or 0) for s in waited)
    kv = max((s.kv_usage or 0.0) for s in waited)
    preempted = sum(1 for s in waited for r in s.preempted_ids if r == rid) or \
        int(ctx.budget.request.finish.get("num_preemptions") or 0)
    why = ("a long prefill held the steps" if prefills and max(s.num_prefill_tokens for s in waited) >= 256
           else "KV cache exhausted" if kv >= 0.95 or preempted else "the batch was full")
    text = (f"request {rid} waited {ms(sum(amounts.values()))} beyond the usual through {len(waited)} steps of "
            f"other requests ({why}: up to {running} running, {ahead} waiting, KV {kv:.0%}"
            + (f", preempted {preempted} times" if preempted else "") + "); held by "
            + ", ".join(f"{r} ({ms(n)})" for r, n in held.most_common(3)))
    return [Finding(CAUSE, who(ctx.pid, ctx.engine.comm, request_ids=ids), text, amounts=amounts,
                    figures={"waited_steps": len(waited), "max_running": running, "max_waiting": ahead,
                             "max_kv_usage": kv, "preemptions": preempted, "why": why})]
