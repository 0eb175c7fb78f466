"""`explain`: a finished request's latency budget, the verdicts that split its excess, and what stays unexplained,
in the shape the control API, the CLI and the TUI read (diagnosis contract §3).

The same code serves a live agent (agent/diagnosis/monitor.py hands in its engines, baselines and evidence) and a
recording (agent/recording/replay.py rebuilds those from parquet first).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpusleuth.agent.diagnosis.attribution import Verdict, attribute
from gpusleuth.agent.diagnosis.baseline import EngineBaseline
from gpusleuth.agent.diagnosis.budget import Budget, StopLookup, build_budget
from gpusleuth.agent.diagnosis.causes import is_likely
from gpusleuth.agent.diagnosis.context import Context, Finding, HostInfo
from gpusleuth.agent.diagnosis.detectors import DETECTORS
from gpusleuth.agent.diagnosis.engines import EngineTimeline
from gpusleuth.agent.diagnosis.evidence import EvidenceIndex, SampleIndex
from gpusleuth.agent.diagnosis.spans import RequestSpans
from gpusleuth.probes.kernel.syscall_table import WAIT_SYSCALLS
from gpusleuth.probes.records import Event

MAX_EVIDENCE_SHOWN = 500


@dataclass(slots=True)
class Diagnosis:
    budget: Budget
    verdicts: list[Verdict]
    unexplained_ns: float
    ctx: Context

    @property
    def top(self) -> Verdict | None:
        return self.verdicts[0] if self.verdicts else None

    def summary(self) -> dict[str, Any]:
        """One line of the recent diagnoses (what `--slowest` and `--window` sort and filter)."""
        return summarize(self.budget, self.verdicts, self.unexplained_ns)


def summarize(b: Budget, verdicts: list[Verdict], unexplained_ns: float) -> dict[str, Any]:
    """A request's line: its budget's totals and its top verdict (None: not run or nothing found)."""
    r, top = b.request, (verdicts[0] if verdicts else None)
    return {"request_id": r.request_id, "pid": r.pid, "start_ns": r.start_ns, "end_ns": r.end_ns,
            "actual_ms": round(b.actual_ns / 1e6, 3), "expected_ms": round(b.expected_ns / 1e6, 3),
            "excess_ms": round(b.excess_ns / 1e6, 3), "unexplained_ms": round(unexplained_ns / 1e6, 3),
            "cause": top.cause if top else None, "share": round(top.share, 3) if top else 0.0,
            "is_likely": bool(top and top.is_likely)}


FROZEN_STATES = ("T", "t", "frozen")


def stop_lookup(evidence: EvidenceIndex) -> StopLookup:
    """Finds the longest stop (T / t / frozen off-CPU) of an engine's threads that ended in [lo, hi]."""
    def find(eng: EngineTimeline, lo: int, hi: int) -> tuple[int, int] | None:
        found = [e for pid in {eng.pid, *eng.rank_pids.values()} for e in evidence.events("offcpu", lo, hi, pid)
                 if lo <= e.end_ns <= hi and str(e.attrs.get("state")) in FROZEN_STATES]
        if not found:
            return None
        e = max(found, key=lambda e: e.end_ns - e.start_ns)
        return e.start_ns, e.end_ns
    return find


def run_detectors(ctx: Context) -> list[Finding]:
    return [f for d in DETECTORS for f in d.detect(ctx)]


def diagnose(req: RequestSpans, eng: EngineTimeline, base: EngineBaseline, evidence: EvidenceIndex,
             samples: SampleIndex, host: HostInfo | None = None, budget: Budget | None = None) -> Diagnosis:
    """Budget, verdicts and unexplained time of one finished request (its budget, if already built)."""
    budget = budget or build_budget(req, eng, base, stop_lookup(evidence))
    ctx = Context(budget, eng, base, evidence, samples, host or HostInfo())
    verdicts, unexplained = attribute(budget, run_detectors(ctx)) if budget.parts else ([], 0.0)
    return Diagnosis(budget, verdicts, unexplained, ctx)


def _row(req: RequestSpans) -> dict[str, Any]:
    def span_s(phase: str) -> float | None:
        lo_hi = req.phases.get(phase)
        return None if lo_hi is None else (lo_hi[1] - lo_hi[0]) / 1e9
    f = req.finish
    return {"request_id": req.request_id, "pid": req.pid, "rank": req.rank, "start_ns": req.start_ns,
            "end_ns": req.end_ns, "queue_s": span_s("queued"), "prefill_s": span_s("prefill"),
            "decode_s": span_s("decode"), "ttft_s": f.get("ttft_s"), "tpot_s": f.get("tpot_s"),
            "e2e_s": f.get("e2e_s", (req.end_ns - req.start_ns) / 1e9), "prompt_tokens": req.prompt_tokens,
            "output_tokens": req.output_tokens, "status": str(f.get("status", "")),
            "num_preemptions": int(f.get("num_preemptions") or 0)}


def _host_events(ctx: Context) -> tuple[list[Event], int]:
    """Host events overlapping the request (engine spans and idle waits left out: the waits are only counted),
    and how many idle waits there were."""
    lo, hi = ctx.window()
    out, idle = [], 0
    for kind in ctx.evidence.kinds():
        if kind.startswith(("request.", "engine.", "incident")):
            continue
        for e in ctx.evidence.events(kind, lo, hi):
            if kind == "slow_syscall" and e.attrs.get("syscall") in WAIT_SYSCALLS:
                idle += 1
            else:
                out.append(e)
    out += ctx.engine.gcs_within(lo, hi)
    return sorted(out, key=lambda e: e.start_ns)[-MAX_EVIDENCE_SHOWN:], idle


def to_dict(d: Diagnosis, row: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `explain` answer: request, phases, budget table, verdicts, unexplained, and the host events that
    overlapped the request (`is_on_path`: of the engine's own processes)."""
    b, req = d.budget, d.budget.request
    shown, idle = _host_events(d.ctx)
    pids = d.ctx.pids()
    excess = b.excess_ns
    phase_rows = [{"phase": name, "start_ns": lo, "end_ns": hi} for name, (lo, hi) in
                  sorted(req.phases.items(), key=lambda kv: kv[1][0])]
    return {"request": row or _row(req), "phases": phase_rows, "steps": len(b.steps()),
            "budget": {"parts": [p.to_dict() for p in b.parts.values()], "actual_ms": round(b.actual_ns / 1e6, 3),
                       "expected_ms": round(b.expected_ns / 1e6, 3), "excess_ms": round(excess / 1e6, 3),
                       "unexplained_ms": round(d.unexplained_ns / 1e6, 3),
                       "unexplained_share": round(d.unexplained_ns / excess, 3) if excess > 0 else 0.0,
                       "is_slow": is_likely(excess / 1e6, excess / 1e6, b.expected_ns / 1e6)},
            "verdicts": [v.to_dict() for v in d.verdicts], "unexplained_ms": round(d.unexplained_ns / 1e6, 3),
            "overlapping": [{**e.to_dict(), "is_on_path": e.pid in pids} for e in shown],
            "idle_waits_hidden": idle}
