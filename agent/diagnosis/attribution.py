"""Splitting a budget's excess among the detectors' findings: each part's excess goes to the evidence on its path,
no nanosecond twice, and what no evidence covers stays unexplained.

Per part, findings claim in detector order (the list in detectors/__init__.py, most specific first): interval
claims take only time no earlier finding took, less the finding's discount (time that is normal, e.g. the step
thread's usual sleeps); amount claims add. When the claims exceed the part's excess, all are scaled down alike,
so a verdict never explains more than the excess it was handed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gpusleuth.agent.diagnosis.budget import Budget
from gpusleuth.agent.diagnosis.causes import Culprit, is_likely, runbook_path
from gpusleuth.agent.diagnosis.context import Finding
from gpusleuth.agent.diagnosis.intervals import Interval, merge, subtract

MIN_EXPLAINED_NS = 100_000  # verdicts explaining less than 0.1 ms are left out


@dataclass(slots=True)
class Verdict:
    cause: str
    culprit: Culprit
    explained_ns: float
    share: float  # of the budget's excess
    evidence: str
    parts: dict[str, float]  # part -> ns explained there
    is_likely: bool
    figures: dict[str, Any]
    finding: Finding | None = field(default=None, repr=False)  # what it came from (its intervals)

    def to_dict(self) -> dict[str, Any]:
        return {"cause": self.cause, "culprit": dict(self.culprit), "explained_ms": round(self.explained_ns / 1e6, 3),
                "share": round(self.share, 3), "score": round(self.share, 3), "is_likely": self.is_likely,
                "parts": {k: round(v / 1e6, 3) for k, v in self.parts.items()}, "evidence": self.evidence,
                "figures": self.figures, "runbook": runbook_path(self.cause)}


def _raw_claims(part: str, findings: list[Finding]) -> list[float]:
    taken: list[Interval] = []
    out = []
    for f in findings:
        ivs = merge(f.intervals.get(part, ()))
        own = sum(b - a for a, b in subtract(ivs, taken)) if ivs else 0
        if ivs:
            taken = merge(taken + ivs)
        out.append(max(0.0, own - f.discount.get(part, 0.0)) + max(0.0, f.amounts.get(part, 0.0)))
    return out


def attribute(budget: Budget, findings: list[Finding]) -> tuple[list[Verdict], float]:
    """Verdicts (most explained first) and the unexplained ns of the budget's excess."""
    explained = [dict() for _ in findings]  # type: list[dict[str, float]]
    for name, part in budget.parts.items():
        raw = _raw_claims(name, findings)
        total = sum(raw)
        if total <= 0:
            continue
        scale = min(1.0, part.excess_ns / total)
        for i, ns in enumerate(raw):
            if ns > 0:
                explained[i][name] = ns * scale
    excess, expected = budget.excess_ns, budget.expected_ns
    verdicts = []
    for f, parts in zip(findings, explained):
        ns = sum(parts.values())
        if ns < MIN_EXPLAINED_NS:
            continue
        share = ns / excess if excess > 0 else 0.0
        verdicts.append(Verdict(f.cause, f.culprit, ns, share, f.evidence, parts,
                                is_likely(ns / 1e6, excess / 1e6, expected / 1e6), f.figures, f))
    verdicts.sort(key=lambda v: v.explained_ns, reverse=True)
    return verdicts, max(0.0, excess - sum(v.explained_ns for v in verdicts))
