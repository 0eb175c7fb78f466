"""The agent's answers in one shape, whichever agent gave them.

The current agent (commit 90f1e1e) has verdicts {cause, score, evidence, runbook} with its own cause names; the
diagnosis contract's verdicts carry {cause, culprit, explained_ms, share, evidence, runbook} (and maybe `likely`)
with the contract's names, and `likely` (or `is_likely`) where the agent applies the likely rule itself. Both are
read here; nothing else in the suite looks at raw verdicts.
"""
from __future__ import annotations

from typing import Any

from gpusleuth.probes.kernel.syscall_table import WAIT_SYSCALLS

# The current agent's cause names -> the contract's classes (network, queueing, tp_straggler are the same).
OLD_CAUSES = {"runqueue": "cpu_contention", "syscall": "blocking_io", "gpu_throttle": "gpu_clocks",
              "gpu_error": "gpu_error"}
# The current agent's verdicts have only a score (the covered fraction of the slowest phase): >= this is "likely".
LIKELY_SCORE = 0.3
FROZEN_STATES = {"T", "t", "frozen"}


def cause_name(cause: str | None) -> str | None:
    return OLD_CAUSES.get(cause, cause) if cause else None


def slowest_phase_ms(report: dict[str, Any]) -> float:
    """The longest phase of the explained request, in ms (what the current agent's score is a fraction of)."""
    spans = [(p.get("end_ns") or 0) - (p.get("start_ns") or 0) for p in report.get("phases") or []]
    return max(spans, default=0) / 1e6


def budget_totals(report: dict[str, Any]) -> tuple[float, float] | None:
    """(excess_ms, expected_ms) of the request as the agent's budget says, where it has one."""
    for src in (report, report.get("budget") if isinstance(report.get("budget"), dict) else None):
        if src and "excess_ms" in src and "expected_ms" in src:
            return float(src["excess_ms"]), float(src["expected_ms"])
    parts = report.get("budget")
    if isinstance(parts, dict):
        parts = parts.get("parts")
    if isinstance(parts, list) and parts and all(isinstance(p, dict) and "expected_ms" in p for p in parts):
        return (sum(float(p.get("excess_ms", 0.0)) for p in parts), sum(float(p["expected_ms"]) for p in parts))
    return None


def is_likely(v: dict[str, Any], explained_ms: float, excess_expected: tuple[float, float]) -> bool:
    """The contract's rule: explains >= 50 % of an excess that is >= max(20 % of expected, 5 ms)."""
    for key in ("likely", "is_likely"):
        if key in v:
            return bool(v[key])
    if "explained_ms" not in v:
        return float(v.get("score") or 0.0) >= LIKELY_SCORE
    excess, expected = excess_expected
    return excess >= max(0.2 * expected, 5.0) and explained_ms >= 0.5 * excess


def normalize(report: dict[str, Any], measured: tuple[float, float]) -> list[dict[str, Any]]:
    """Verdicts best first as {cause, explained_ms, score, likely, culprit, evidence}. `measured` is the
    (excess_ms, expected_ms) the suite measured, used for the likely rule where the agent gives no budget."""
    totals = budget_totals(report) or measured
    phase_ms = slowest_phase_ms(report)
    out = []
    for v in report.get("verdicts") or []:
        explained = float(v["explained_ms"]) if "explained_ms" in v else float(v.get("score") or 0.0) * phase_ms
        out.append({"cause": cause_name(v.get("cause")), "explained_ms": round(explained, 2),
                    "score": v.get("score"), "share": v.get("share"), "likely": is_likely(v, explained, totals),
                    "culprit": v.get("culprit") if isinstance(v.get("culprit"), dict) else None,
                    "evidence": str(v.get("evidence", ""))[:200]})
    return out


def event_cause(e: dict[str, Any], engine_pids: set[int]) -> str | None:
    """The cause an evidence event (or incident) names, if any; per-thread evidence must be on the engine."""
    kind, attrs = e.get("kind", ""), e.get("attrs") or {}
    if kind == "incident":
        return cause_name(attrs.get("cause"))
    on_engine = e.get("pid") in engine_pids or attrs.get("pid") in engine_pids
    if kind.startswith("net.") and kind != "net.skb_drop":
        return "network"
    if kind == "softirq":
        return "softirq"
    if kind == "gpu_throttle":
        return "gpu_clocks"
    if kind in ("gpu_xid", "gpu_lost"):
        return "gpu_error"
    if not on_engine:
        return None
    if kind == "runq_delay":
        return "cpu_contention"
    if kind == "cgroup_throttle":
        return "cgroup_throttling"
    if kind == "direct_reclaim":
        return "memory_reclaim"
    if kind == "offcpu":
        return "process_frozen" if attrs.get("state") in FROZEN_STATES else (
            "blocking_io" if attrs.get("state") == "D" else None)
    if kind == "slow_syscall" and attrs.get("syscall") not in WAIT_SYSCALLS:
        return "blocking_io"
    return None


def culprit_ok(culprit: dict[str, Any] | None, truth: dict[str, Any]) -> bool:
    """Whether a verdict's culprit is the injected one, by an identity in truth["accept"] (never a comm)."""
    if not culprit:
        return False
    for key in truth.get("accept", []):
        if key == "pid" and culprit.get("pid") is not None and int(culprit["pid"]) in truth.get("pids", []):
            return True
        if key == "interface" and culprit.get("interface") in truth.get("interfaces", []):
            return True
        if key == "rank" and culprit.get("rank") is not None and culprit.get("rank") == truth.get("rank"):
            return True
        if key == "gpu" and culprit.get("gpu") is not None and culprit.get("gpu") in (truth.get("gpu"),
                                                                                      truth.get("gpu_uuid")):
            return True
    return False
