"""What a rule spec is: an alert (expression, `for`, severity, text with figures, runbook) or a recording rule,
and how a group of them becomes the Prometheus rule-file structure."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpusleuth.exporters.alerts.params import AlertParams

SEVERITIES = ("critical", "warning", "info")


@dataclass(slots=True, frozen=True)
class Alert:
    """One alerting rule. `runbook` is a runbook's file stem (or a template rendering to one)."""

    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    runbook: str

    def __post_init__(self) -> None:
        assert self.severity in SEVERITIES, f"{self.name}: severity {self.severity!r} not in {SEVERITIES}"
        assert self.name.startswith("Gpusleuth"), f"{self.name}: alert names start with Gpusleuth"

    def rule(self, p: AlertParams) -> dict[str, Any]:
        """The rule as it appears in a rule file."""
        out: dict[str, Any] = {"alert": self.name, "expr": self.expr}
        for_ = p.for_override or self.for_
        if for_ != "0s":
            out["for"] = for_
        out["labels"] = {"severity": self.severity}
        out["annotations"] = {"summary": self.summary, "description": self.description,
                              "runbook_url": p.runbook_url(self.runbook)}
        return out


@dataclass(slots=True, frozen=True)
class Recording:
    """One recording rule."""

    record: str
    expr: str

    def rule(self, p: AlertParams) -> dict[str, Any]:
        return {"record": self.record, "expr": self.expr}


@dataclass(slots=True, frozen=True)
class Group:
    """One rule group (one source), written to `gpusleuth-<source>.rules.yml`."""

    source: str
    rules: tuple[Alert | Recording, ...]
    interval: str = ""

    @property
    def name(self) -> str:
        return f"gpusleuth-{self.source}"

    @property
    def alerts(self) -> tuple[Alert, ...]:
        return tuple(r for r in self.rules if isinstance(r, Alert))

    def as_dict(self, p: AlertParams) -> dict[str, Any]:
        group: dict[str, Any] = {"name": self.name}
        if self.interval:
            group["interval"] = self.interval
        group["rules"] = [r.rule(p) for r in self.rules]
        return group


def num(x: float) -> str:
    """A threshold as PromQL text (no float noise: 14.4 * 0.01 -> 0.144)."""
    return f"{x:.6g}"
