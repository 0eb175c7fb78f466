"""Events: every host event (slow syscalls, run-queue delays, bursts, retransmits, GPU throttling, XIDs), newest
first, idle waits hidden until `i` (tui/idle.py), with a filter (tui/query.py: `kind:`, `pid:`, `source:`,
`comm:`, any attribute such as `syscall:`, free text, `-` or `!` to negate). Engine spans are per request, on the
Requests screen."""
from __future__ import annotations

from typing import Iterable

from rich.text import Text
from textual.binding import Binding
from textual.containers import Vertical
from textual.widget import Widget

from gpusleuth.tui import fmt, query, views
from gpusleuth.tui.idle import is_idle_event
from gpusleuth.tui.screens.base import DataScreen
from gpusleuth.tui.source import Frame, Want
from gpusleuth.tui.widgets.panel import Panel
from gpusleuth.tui.widgets.row_table import RowTable

ROWS_SHOWN = 500
KIND_STYLE = {"syscalls": "red", "sched": "yellow", "net": "magenta", "gpu": "bold red", "spans": "cyan"}


class EventsScreen(DataScreen):
    KEY, LABEL = "events", "Events"
    WANT = Want(sources=frozenset({"agent"}), is_events=True)
    HAS_FILTER = True
    HAS_IDLE_TOGGLE = True
    FILTER_FIELDS = "kind source comm pid tid, and any attribute: syscall state interface gpu …"
    BINDINGS = [Binding("i", "toggle_idle", "Show / hide idle waits")]

    def __init__(self) -> None:
        super().__init__()
        self._cells: dict[str, tuple] = {}  # events never change: format each once

    def compose_body(self) -> Iterable[Widget]:
        with Vertical(id="events-body"):
            yield Panel("Events", id="events-title")
            yield RowTable("time", "kind", "process", "duration", "detail", id="events-table", zebra_stripes=False)

    def on_mount(self) -> None:
        self.query_one("#filter").placeholder = ("filter: kind:slow_syscall pid:1234 -comm:python !source:net "
                                                 "or text (esc clears, ? help)")

    def show_frame(self, frame: Frame) -> None:
        title = self.query_one("#events-title", Panel)
        if frame.notes.get("events") and not frame.events:
            title.show_missing(frame.notes["events"])
            return
        terms = query.parse(self.filter_text)
        events = frame.events if self.is_idle_shown else [e for e in frame.events if not is_idle_event(e)]
        matching = [e for e in events if not terms or views.event_matches(e, terms)]
        shown = matching[-ROWS_SHOWN:]
        note = f" matching '{self.filter_text}'" if self.filter_text else ""
        idle = "" if self.is_idle_shown else f", {len(frame.events) - len(events)} idle waits hidden (i)"
        title.show(Text(f"{len(matching)} of {len(frame.events)} recent events{note}{idle}, newest first"
                        + ("" if len(shown) == len(matching) else f" (showing {len(shown)})")
                        + " · spans: Requests", style="dim"))
        rows = [(key, self._cells.get(key) or self._format(key, e, frame.wall_offset_ns))
                for e in reversed(shown) for key in (str(e.get("seq")),)]
        self._cells = dict(rows)
        self.query_one("#events-table", RowTable).show_rows(rows)

    @staticmethod
    def _format(key: str, e: dict, wall_offset_ns: int) -> tuple:
        return (fmt.clock(e.get("start_ns", 0), wall_offset_ns, is_ms=True),
                Text(e.get("kind", ""), style=KIND_STYLE.get(e.get("source", ""), "")), fmt.trunc(views.who(e), 22),
                fmt.dur_ns(e.get("end_ns", 0) - e.get("start_ns", 0)), fmt.trunc(views.event_detail(e), 400))
