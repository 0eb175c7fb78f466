"""tp_straggler: with tensor parallelism, one rank reached the step's collective last and every other rank waited
for it.

Evidence: the per-rank step spans of the same step number. The straggler is the rank that waited least inside its
collective (`tp_wait_ms`) or, without that figure, the one that finished its step last; rank 0's time waiting
for it (its wait less the straggler's) is credited, at most each step's excess. The straggler's own evidence
(run-queue waits, sleeps, off-CPU states of its step thread during those steps) is named as the reason.
"""
from __future__ import annotations

from collections import Counter

from gpusleuth.agent.diagnosis.causes import who
from gpusleuth.agent.diagnosis.context import Context, Finding
from gpusleuth.agent.diagnosis.detectors.common import ms
from gpusleuth.agent.diagnosis.detectors.gpus import step_excess
from gpusleuth.agent.diagnosis.spans import Step

CAUSE = "tp_straggler"


def _lost_ns(ctx: Context, s: Step) -> float:
    """Time the step thread of `s` spent not running (run-queue waits, off-CPU) inside the step."""
    pid = ctx.engine.rank_pids.get(s.rank)
    if pid is None:
        return 0.0
    ns = 0
    for kind in ("runq_delay", "offcpu", "direct_reclaim"):
        for e in ctx.events(kind, s.start_ns, s.end_ns, pid):
            if not s.tid or e.tid == s.tid:
                ns += max(0, min(e.end_ns, s.end_ns) - max(e.start_ns, s.start_ns))
    return float(ns)


def _lag(ctx: Context, s0: Step, peers: list[Step]) -> tuple[Step, float]:
    """The straggler among rank 0's step and its peers, and rank 0's wait for it (ns). With `tp_wait_ms` the
    straggler waited least; without it, it is the rank whose step thread lost the most time not running."""
    ranks = [s0, *peers]
    if all(s.tp_wait_ms is not None for s in ranks):
        late = min(ranks, key=lambda s: s.tp_wait_ms)
        return late, max(0.0, (s0.tp_wait_ms - late.tp_wait_ms) * 1e6)
    lost = {id(s): _lost_ns(ctx, s) for s in ranks}
    late = max(ranks, key=lambda s: lost[id(s)])
    return late, lost[id(late)] - lost[id(s0)]


def _own_evidence(ctx: Context, rank: int, steps: list[Step]) -> str:
    pid = ctx.engine.rank_pids.get(rank)
    tids = {s.tid for s in steps if s.tid}
    if pid is None or not steps:
        return ""
    lo, hi = steps[0].start_ns, steps[-1].end_ns
    found: Counter = Counter()
    for kind in ("runq_delay", "offcpu", "slow_syscall", "direct_reclaim"):
        for e in ctx.events(kind, lo, hi, pid):
            if not tids or e.tid in tids:
                label = kind if kind != "offcpu" else f"off-CPU {e.attrs.get('state')}"
                found[label if kind != "slow_syscall" else str(e.attrs.get("syscall"))] += e.end_ns - e.start_ns
    return ", ".join(f"{k} {ms(v)}" for k, v in found.most_common(3))


def detect(ctx: Context) -> list[Finding]:
    if len(ctx.engine.ranks) < 2:
        return []
    amounts: dict[str, float] = {}
    late_by: Counter = Counter()
    late_steps: dict[int, list[Step]] = {}
    for part in ctx.engine_parts():
        for s0 in part.own:
            peers = [p for r in ctx.engine.ranks if r != 0 and (p := ctx.engine.step_by_id(s0.step_id, r))]
            if not peers:
                continue
            late, wait = _lag(ctx, s0, peers)
            if late is s0 or wait <= 0:
                continue
            ns = min(wait, step_excess(ctx, s0))
            amounts[part.name] = amounts.get(part.name, 0.0) + ns
            late_by[late.rank] += ns
            late_steps.setdefault(late.rank, []).append(late)
    if not late_by:
        return []
    rank, ns = late_by.most_common(1)[0]
    steps = late_steps[rank]
    pid = ctx.engine.rank_pids.get(rank, 0)
    why = _own_evidence(ctx, rank, steps)
    text = (f"rank {rank} (pid {pid}, tid {steps[0].tid}) reached the collective last in {len(steps)} of the "
            f"request's steps; rank 0 waited {ms(ns)} for it" + (f"; on rank {rank}: {why}" if why else ""))
    return [Finding(CAUSE, who(pid, f"gs-step-r{rank}", steps[0].tid, rank=rank, gpu=steps[0].gpu_index), text,
                    amounts=amounts, figures={"rank": rank, "late_steps": len(steps)})]
