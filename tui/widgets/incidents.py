"""IncidentsPanel: the diagnosis's incidents, newest first, open ones marked; the one under the cursor spelled out
(culprit, evidence, runbook path) under the table. Tall enough for its rows up to a cap set by the screen."""
from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical

from gpusleuth.tui import fmt
from gpusleuth.tui.explain_text import culprit_text
from gpusleuth.tui.runbooks import runbook_name
from gpusleuth.tui.widgets.panel import Panel
from gpusleuth.tui.widgets.row_table import RowTable


def newest_first(incidents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Open ones first, then by onset, newest first."""
    return sorted(incidents, key=lambda i: (not i.get("is_open"), -int(i.get("onset_ns") or 0)))


def incident_cells(i: dict[str, Any], t_ns: int, wall_offset_ns: int) -> tuple:
    state = Text("OPEN", style="bold red") if i.get("is_open") else Text(
        f"ended {fmt.ago(i.get('last_ns'), t_ns)}", style="dim")
    c = i.get("culprit") or {}
    return (state, fmt.clock(int(i.get("onset_ns") or 0), wall_offset_ns), Text(str(i.get("cause")), style="bold"),
            fmt.trunc(f"{c.get('comm', '?')}({c.get('pid', '?')})" if c else "—", 22),
            fmt.trunc(f"{i.get('engine_comm') or '?'}({i.get('engine_pid')})", 18),
            fmt.dur_ns((i.get("explained_ms") or 0) * 1e6), runbook_name(str(i.get("runbook") or "")))


def incident_line(i: dict[str, Any]) -> Text:
    """The selected incident in full: culprit, evidence, runbook path, the key that runs its checks."""
    return Text.assemble((f"{i.get('cause')}", "bold"), " culprit ", (culprit_text(i.get("culprit") or {}), "bold"),
                         f" · {i.get('evidence', '')}\n", "runbook ", (str(i.get("runbook", "")), "cyan"),
                         (" · c: run its checks", "dim"))


class IncidentsPanel(Vertical):
    DEFAULT_CSS = """
    IncidentsPanel { height: auto; }
    IncidentsPanel > RowTable { height: 2; }
    IncidentsPanel.-empty > RowTable { display: none; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.max_rows = 3
        self.incidents: dict[str, dict[str, Any]] = {}

    def compose(self) -> ComposeResult:
        yield Panel("Incidents", id="ov-incidents-title")
        yield RowTable("state", "onset", "cause", "culprit", "engine", "explains", "runbook", id="ov-incidents",
                       zebra_stripes=False)

    @property
    def table(self) -> RowTable:
        return self.query_one(RowTable)

    def selected(self) -> dict[str, Any] | None:
        return self.incidents.get(self.table.cursor_key or "")

    def show(self, incidents: list[dict[str, Any]] | None, t_ns: int, wall_offset_ns: int, note: str = "") -> None:
        title = self.query_one(Panel)
        if incidents is None:
            self.add_class("-empty")
            title.show_missing(note or "the agent gives no incidents")
            return
        ordered = newest_first(incidents)
        self.incidents = {str(i.get("id")): i for i in ordered}
        self.set_class(not ordered, "-empty")
        if not ordered:
            title.show(Text("none in the last 5 min: no cause kept pointing at an engine", style="green"))
            self.table.show_rows([])
            return
        self.table.styles.height = min(len(ordered), self.max_rows) + 1
        self.table.show_rows([(str(i.get("id")), incident_cells(i, t_ns, wall_offset_ns)) for i in ordered])
        self.show_selected()

    def show_selected(self) -> None:
        chosen = self.selected()
        if chosen is not None:
            n_open = sum(1 for i in self.incidents.values() if i.get("is_open"))
            head = Text(f"{n_open} open, {len(self.incidents) - n_open} ended · ", style="bold red" if n_open else "")
            self.query_one(Panel).show(head + incident_line(chosen))

    def on_row_table_highlighted(self, event: RowTable.Highlighted) -> None:
        self.show_selected()
