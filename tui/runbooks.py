"""Running a runbook's checks from the TUI: the app is handed a RunbookRunner (`agent tui` builds one over the same
agent or recording the screens show: agent/cli/tui_runbooks.py), runs it in a worker, and shows the answer as text.
The TUI never loads runbooks itself: they validate against the agent's control methods, which it does not import."""
from __future__ import annotations

from pathlib import PurePath
from typing import Any, Protocol

from rich.text import Text

STATUS_STYLE = {"fail": "bold red", "pass": "green", "skip": "dim", "error": "yellow"}


class RunbookRunner(Protocol):
    def run(self, name: str) -> dict[str, Any]:
        """{"runbook", "title", "path", "checks": [{"name", "status", "figure", "unit", "fault_if", "detail",
        "next"}]}; raises LookupError for an unknown runbook."""


def runbook_name(path_or_name: str) -> str:
    """`cpu-contention` from `/…/runbooks/cpu-contention.md` (a verdict's or an incident's runbook path)."""
    return PurePath(path_or_name).stem if path_or_name else ""


def _figure(c: dict[str, Any]) -> str:
    if c.get("figure") is None:
        return "none"
    return f"{c['figure']:.4g}" + (f" {c['unit']}" if c.get("unit") else "")


def report_text(result: dict[str, Any]) -> Text:
    """What `agent runbook NAME` prints, coloured: each check's status, figure, threshold, next step."""
    checks = result.get("checks") or []
    failed = sum(c["status"] == "fail" for c in checks)
    lines = [Text.assemble((f"{result.get('runbook')}: {result.get('title', '')}", "bold")),
             Text(str(result.get("path", "")), style="cyan"),
             Text(f"{failed} of {len(checks)} checks confirm the fault" if checks else "this runbook has no checks",
                  style="bold red" if failed else "green"), Text("")]
    for c in checks:
        status = c["status"]
        line = Text.assemble((f"{status.upper():<5} ", STATUS_STYLE.get(status, "")), (c["name"], "bold"))
        if status != "skip":
            line.append(f": {_figure(c)} (fault if {c.get('fault_if', '')})")
        if c.get("detail"):
            line.append(f"  [{c['detail']}]", style="dim")
        lines.append(line)
        if c.get("next") and status != "skip":
            lines.append(Text(f"      next: {c['next']}", style="italic"))
    return Text("\n").join(lines)
