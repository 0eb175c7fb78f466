"""The full report of one request: why it was slow (every verdict: share, culprit, evidence, runbook path), its
latency budget, its phase timeline and the host events on its path; scrolls, `c` runs the top verdict's checks."""
from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from gpusleuth.tui import explain_text, fmt, views
from gpusleuth.tui.widgets.timeline import timeline_text

EVENTS_SHOWN = 200


def event_rows(detail: dict[str, Any]) -> list[tuple[str, tuple]]:
    """The host events that overlapped the request, by start, as RowTable rows (offset from the request start)."""
    start = (detail.get("request") or {}).get("start_ns") or 0
    rows = []
    for i, e in enumerate(sorted(detail.get("overlapping") or [], key=lambda e: e.get("start_ns", 0))):
        rows.append((f"e{i}", (f"+{fmt.dur_ns(max(0, e.get('start_ns', 0) - start))}", e.get("kind", ""),
                               views.who(e), fmt.dur_ns(e.get("end_ns", 0) - e.get("start_ns", 0)),
                               views.event_detail(e))))
    notes = detail.get("notes") or {}
    if notes and not rows:
        rows.append(("note", ("", "note", "", "", "; ".join(map(str, notes.values())))))
    return rows


def full_text(detail: dict[str, Any], width: int) -> Text:
    """Report, timeline, then the host events one per line (wrapped, never cut)."""
    parts = [explain_text.report_text(detail, width), Text(""), Text("Phases", style="bold underline"),
             timeline_text(detail, width)]
    rows = event_rows(detail)
    idle = detail.get("idle_waits_hidden")
    head = f"Host events on its path: {len(rows)}" + (f" ({idle} idle waits left out)" if idle else "")
    parts += [Text(""), Text(head, style="bold underline")]
    for _, (at, kind, who, dur, what) in rows[:EVENTS_SHOWN]:
        parts.append(Text.assemble(f"{at:>8} ", (f"{kind:<14}", "bold"), f" {who} {dur}  {what}"))
    if len(rows) > EVENTS_SHOWN:
        parts.append(Text(f"… and {len(rows) - EVENTS_SHOWN} more", style="dim"))
    return Text("\n").join(parts)


class RequestDetailScreen(Screen):
    DEFAULT_CSS = """
    RequestDetailScreen > VerticalScroll { height: 1fr; padding: 0 1; }
    RequestDetailScreen > #detail-head { height: 1; background: $panel; }
    """
    BINDINGS = [Binding("escape,q", "close", "Back to the list"),
                Binding("c", "run_checks", "Run the top verdict's runbook checks")]

    def __init__(self, detail: dict[str, Any] | None, request_id: str) -> None:
        super().__init__()
        self.detail = detail
        self.request_id = request_id

    def compose(self) -> ComposeResult:
        yield Static(Text.assemble((" Request report ", "reverse bold"), f" {self.request_id}  ",
                                   ("esc back · c runbook checks · ↑↓ pgup pgdn scroll", "dim")), id="detail-head")
        with VerticalScroll(id="detail-scroll"):
            yield Static(Text("asking the agent to explain it …", style="dim"), id="detail-text")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#detail-scroll").focus()
        if self.detail is not None:
            self.show_detail(self.detail)

    def show_detail(self, detail: dict[str, Any]) -> None:
        if str((detail.get("request") or {}).get("request_id")) != self.request_id:
            return
        self.detail = detail
        self._draw()

    def on_resize(self) -> None:
        if self.detail is not None:
            self._draw()

    def _draw(self) -> None:
        width = max(40, (self.size.width or 80) - 4)
        self.query_one("#detail-text", Static).update(full_text(self.detail, width))

    def action_close(self) -> None:
        self.dismiss()

    def action_run_checks(self) -> None:
        verdicts = (self.detail or {}).get("verdicts") or []
        if not verdicts:
            self.notify("this request has no verdict, so no runbook to check", timeout=3)
            return
        self.app.run_runbook(str(verdicts[0].get("runbook", "")), f"top verdict {verdicts[0].get('cause')}")
