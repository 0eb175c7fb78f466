"""IncidentsPanel: the diagnosis's incidents, open ones first, newest first; the one under the cursor spelled out
under the table (culprit, runbook path; evidence where the screen is tall). Rows up to a cap the screen sets."""
from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from gpusleuth.tui import fmt
from gpusleuth.tui.explain_text import culprit_text
from gpusleuth.tui.widgets.row_table import RowTable


def newest_first(incidents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Open ones first, then by onset, newest first."""
    return sorted(incidents, key=lambda i: (not i.get("is_open"), -int(i.get("onset_ns") or 0)))


def incident_cells(i: dict[str, Any], t_ns: int, wall_offset_ns: int) -> tuple:
    state = Text("OPEN", style="bold red") if i.get("is_open") else Text(
        f"{fmt.dur_ns(max(0, t_ns - int(i.get('last_ns') or 0)))} ago", style="dim")
    c = i.get("culprit") or {}
    return (state, fmt.clock(int(i.get("onset_ns") or 0), wall_offset_ns), Text(str(i.get("cause")), style="bold"),
            fmt.trunc(f"{c.get('comm', '?')}({c.get('pid', '?')})" if c else "—", 22),
            fmt.dur_ns((i.get("explained_ms") or 0) * 1e6),
            fmt.trunc(f"{i.get('engine_comm') or '?'}({i.get('engine_pid')})", 18))


def incident_text(i: dict[str, Any], is_evidence: bool) -> Text:
    """The selected incident spelled out: culprit and runbook path (and the evidence where there is room)."""
    text = Text.assemble("culprit ", (culprit_text(i.get("culprit") or {}), "bold"), " · runbook ",
                         (str(i.get("runbook", "")), "cyan"))
    if is_evidence and i.get("evidence"):
        text.append(f"\n{i['evidence']}", style="dim")
    return text


class IncidentsPanel(Vertical):
    DEFAULT_CSS = """
    IncidentsPanel { height: auto; border-top: solid $error; border-title-style: bold; padding: 0 0 0 0; }
    IncidentsPanel.-none { border-top: solid $success; }
    IncidentsPanel > RowTable { height: 2; overflow-x: hidden; }
    IncidentsPanel > #ov-incident { height: auto; padding: 0 1; }
    IncidentsPanel.-empty > RowTable, IncidentsPanel.-empty > #ov-incident { display: none; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.max_rows = 2
        self.is_evidence = False
        self.incidents: dict[str, dict[str, Any]] = {}
        self.border_title = "Incidents"
        self._line: Text | None = None
        self._shown_title = "Incidents"

    def compose(self) -> ComposeResult:
        yield RowTable("state", "onset", "cause", "culprit", "explains", "engine", id="ov-incidents",
                       zebra_stripes=False)
        yield Static("", id="ov-incident")

    @property
    def table(self) -> RowTable:
        return self.query_one(RowTable)

    @property
    def shown_text(self) -> str:
        """The title and the selected incident's line, as plain text (tests read it)."""
        return f"{self.border_title}\n{self._line.plain if self._line is not None else ''}"

    def selected(self) -> dict[str, Any] | None:
        return self.incidents.get(self.table.cursor_key or "")

    def _title(self, title: str) -> None:
        if title != self._shown_title:
            self._shown_title = title
            self.border_title = title

    def show(self, incidents: list[dict[str, Any]] | None, t_ns: int, wall_offset_ns: int, note: str = "") -> None:
        if incidents is None:
            self.set_class(True, "-empty")
            self.set_class(False, "-none")
            self._title(f"Incidents: {note or 'the agent gives none'}")
            return
        ordered = newest_first(incidents)
        self.incidents = {str(i.get("id")): i for i in ordered}
        self.set_class(not ordered, "-empty")
        self.set_class(not ordered, "-none")
        if not ordered:
            self._title("Incidents: none in the last 5 min")
            self.table.show_rows([])
            return
        n_open = sum(1 for i in ordered if i.get("is_open"))
        self._title(f"Incidents: {n_open} open, {len(ordered) - n_open} ended · c: run its runbook checks")
        height = min(len(ordered), self.max_rows) + 1
        if self.table.styles.height is None or self.table.styles.height.value != height:
            self.table.styles.height = height
        self.table.show_rows([(str(i.get("id")), incident_cells(i, t_ns, wall_offset_ns)) for i in ordered])
        self.show_selected()

    def show_selected(self) -> None:
        chosen = self.selected()
        if chosen is not None:
            line = incident_text(chosen, self.is_evidence)
            if line != self._line:
                self._line = line
                self.query_one("#ov-incident", Static).update(line)

    def on_row_table_highlighted(self, event: RowTable.Highlighted) -> None:
        self.show_selected()
