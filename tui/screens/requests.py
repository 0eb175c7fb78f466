"""Requests: recent requests sortable by TTFT / TPOT / e2e; the one under the cursor explained below the table (its
budget and top verdict, in full) and, on wide terminals, its phase timeline and host events beside it; `enter`
opens the full report, `c` runs its top verdict's runbook checks."""
from __future__ import annotations

import time
from typing import Any, Iterable

from rich.text import Text
from textual.binding import Binding
from textual.containers import Vertical
from textual.widget import Widget

from gpusleuth.tui import explain_text, fmt, query, views
from gpusleuth.tui.messages import DetailReady
from gpusleuth.tui.screens.base import DataScreen
from gpusleuth.tui.screens.request_detail import RequestDetailScreen, event_rows
from gpusleuth.tui.source import Frame, Want
from gpusleuth.tui.widgets.bars import TextLine
from gpusleuth.tui.widgets.row_table import RowTable
from gpusleuth.tui.widgets.timeline import RequestTimeline

SORTS = {"newest": ("end_ns", "newest"), "ttft": ("ttft_s", "TTFT"), "tpot": ("tpot_s", "TPOT"),
         "e2e": ("e2e_s", "e2e")}
DETAIL_DELAY_S = 0.25  # wait for the cursor to settle before asking the agent
FOLLOW_PERIOD_S = 2.0  # a following cursor's detail is asked again at most this often (the top churns)
WIDE = 160  # columns from which the timeline and host events sit beside the table


def sort_requests(reqs: list[dict[str, Any]], sort: str, text_filter: str = "") -> list[dict[str, Any]]:
    """Slowest first for latency sorts; unfinished requests (no value) last. Filter: tui/query.py over
    `id:`, `status:`, `pid:`, `rank:` and the row's text."""
    terms = query.parse(text_filter)
    if terms:
        reqs = [r for r in reqs if query.matches(
            terms, {"id": r.get("request_id"), "status": r.get("status"), "pid": r.get("pid"), "rank": r.get("rank")},
            f"{r.get('request_id')} {r.get('status')} {r.get('pid')}")]
    field = SORTS[sort][0]
    return sorted(reqs, key=lambda r: (r.get(field) is None, -(r.get(field) or 0)))


def request_cells(r: dict[str, Any]) -> tuple:
    return (fmt.trunc(str(r.get("request_id")), 20), str(r.get("rank", "—")), str(r.get("status") or "—"),
            fmt.dur_s(r.get("queue_s")), fmt.dur_s(r.get("ttft_s")), fmt.dur_s(r.get("tpot_s")),
            fmt.dur_s(r.get("e2e_s")), f"{r.get('prompt_tokens') or '—'}→{r.get('output_tokens') or '—'}")


class RequestsScreen(DataScreen):
    KEY, LABEL = "requests", "Requests"
    WANT = Want(sources=frozenset({"agent"}), is_requests=True)  # `requests` is smaller than the span snapshot
    HAS_FILTER = True
    BINDINGS = [
        Binding("t", "sort('ttft')", "Sort by TTFT"), Binding("o", "sort('tpot')", "Sort by TPOT"),
        Binding("e", "sort('e2e')", "Sort by e2e"), Binding("n", "sort('newest')", "Sort by newest"),
        Binding("c", "run_checks", "Run the top verdict's runbook checks"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.sort = "newest"
        self._rows: dict[str, dict[str, Any]] = {}
        self._cells: dict[str, tuple] = {}
        self._detail_id = ""  # the request asked for; the pane shows it once its answer arrives
        self.detail: dict[str, Any] | None = None
        self._detail_timer = None
        self._asked_at = 0.0

    def compose_body(self) -> Iterable[Widget]:
        with Vertical(id="requests-body"):
            with Vertical(id="req-list"):
                yield TextLine(id="req-title")
                # no zebra stripes: new requests shift every row, and a row's look must not depend on its position
                yield RowTable("request", "rank", "status", "queue", "TTFT", "TPOT", "e2e", "in→out",
                               id="req-table", zebra_stripes=False)
            with Vertical(id="req-pane"):
                yield TextLine(Text("move the cursor onto a request to see why it took what it took"),
                               id="req-summary")
                yield RequestTimeline(id="req-timeline")
                yield RowTable("at", "kind", "process", "duration", "detail", id="req-events", zebra_stripes=False)

    def on_resize(self) -> None:
        self.query_one("#requests-body").set_class(self.size.width >= WIDE, "-wide")
        super().on_resize()
        if self.detail is not None:
            self._show_detail(self.detail)

    def _pane_width(self) -> int:
        width = self.size.width or 80
        return (width // 2 if width >= WIDE else width) - 3  # less the padding and the border

    def action_sort(self, sort: str) -> None:
        self.sort = sort  # a held cursor keeps its request; a following one shows the new top (the slowest)
        if self.frame is not None:
            self.show_frame(self.frame)
        if self._cursor_key() != self._detail_id:  # the user's doing: the detail follows now, not at the follow rate
            if self._detail_timer is not None:
                self._detail_timer.stop()
            self._detail_timer = self.set_timer(DETAIL_DELAY_S, self._ask_cursor_detail)

    def show_frame(self, frame: Frame) -> None:
        title = self.query_one("#req-title", TextLine)
        if frame.requests is None:
            title.set_text(Text("no data: " + (frame.notes.get("requests") or views.missing_reason(frame, "spans")
                                             or "no requests"), style="dim"))
            return
        reqs = sort_requests(frame.requests, self.sort, self.filter_text)
        table = self.query_one("#req-table", RowTable)
        if not frame.requests:
            spans = (frame.status.get("probes") or {}).get("spans")
            is_ok = spans is not None and spans.get("state") in ("ok", "degraded", "recorded")
            title.set_text(Text("no finished requests yet: engines send their spans to the agent's span socket"
                              if is_ok else frame.notes.get("requests") or views.missing_reason(frame, "spans")
                              or "no requests", style="dim"))
        rows, seen = [], {}
        for r in reqs:
            rid = f"{r.get('pid')}/{r.get('request_id')}"  # ids are unique per engine process
            if rid in seen:
                continue
            seen[rid] = r
            cells = self._cells.get(rid)
            if cells is None or self._rows.get(rid) != r:  # finished requests do not change: format once
                cells = request_cells(r)
            rows.append((rid, cells))
        self._rows, self._cells = seen, dict(rows)
        table.show_rows(rows)
        if frame.requests:
            title.set_text(self._title(len(rows), table))
        if rows and not self._detail_id:
            self._ask_detail(rows[0][0])  # show something at once

    def _title(self, n: int, table: RowTable) -> Text:
        mode = "holding one (home: top)" if table.is_holding else "on the top (↑↓ hold one)"
        text = Text(f"{n} requests by {SORTS[self.sort][1]}", style="bold")
        if self.filter_text:
            text.append(f" matching '{self.filter_text}'")
        text.append(f" · {mode} · sort t o e n · enter report", style="dim")
        return text

    # --- detail ---------------------------------------------------------------------------------------------
    def on_row_table_highlighted(self, event: RowTable.Highlighted) -> None:
        if event.table.id != "req-table":
            return
        if self.frame is not None:
            self.query_one("#req-title", TextLine).set_text(self._title(event.table.row_count, event.table))
        if event.key == self._detail_id:
            return
        wait = DETAIL_DELAY_S
        if not event.is_user:  # a following cursor: the top changes with every refresh on a busy engine
            if self._detail_timer is not None:
                return  # one is pending: it reads the cursor when it fires
            wait = max(wait, self._asked_at + FOLLOW_PERIOD_S - time.monotonic())
        elif self._detail_timer is not None:
            self._detail_timer.stop()  # the user is still moving: wait for the cursor to settle
        self._detail_timer = self.set_timer(wait, self._ask_cursor_detail)

    def _ask_cursor_detail(self) -> None:
        self._detail_timer = None
        self._ask_detail(self._cursor_key())

    def _cursor_key(self) -> str:
        return self.query_one("#req-table", RowTable).cursor_key or ""

    def on_row_table_selected(self, event: RowTable.Selected) -> None:
        if event.table.id == "req-table":
            self._ask_detail(event.key)
            self.action_open_report()

    def _ask_detail(self, rid: str) -> None:
        req = self._rows.get(rid)
        if req is not None and rid != self._detail_id:
            self._detail_id = rid
            self._asked_at = time.monotonic()
            self.app.fetch_detail(req, self)

    def on_detail_ready(self, message: DetailReady) -> None:
        if message.request_id != self._detail_id.split("/", 1)[-1]:
            return  # an older answer; the cursor has moved on
        if message.detail is None:
            self.query_one("#req-summary", TextLine).set_text(Text(f"no detail: {message.error}", style="dim"))
            return
        is_new = message.detail != self.detail
        self.detail = message.detail
        if is_new:
            self._show_detail(message.detail)
        if isinstance(self.app.screen, RequestDetailScreen):
            self.app.screen.show_detail(message.detail)

    def _show_detail(self, detail: dict[str, Any]) -> None:
        self.query_one("#req-summary", TextLine).set_text(explain_text.summary_text(detail, self._pane_width()))
        if self.size.width >= WIDE:  # the timeline and the events are shown only beside the list
            self.query_one(RequestTimeline).show_detail(detail)
            self.query_one("#req-events", RowTable).show_rows(event_rows(detail))

    def action_open_report(self) -> None:
        """The selected request's full report (every verdict, budget part, phase and host event)."""
        if isinstance(self.app.screen, RequestDetailScreen):
            return
        rid = self._cursor_key() or self._detail_id
        shown = self.detail if self.detail and rid == self._detail_id else None
        self.app.push_screen(RequestDetailScreen(shown, rid.split("/", 1)[-1]))

    def action_run_checks(self) -> None:
        verdicts = (self.detail or {}).get("verdicts") or []
        if not verdicts:
            self.flash("this request has no verdict, so no runbook to check")
            return
        self.app.run_runbook(str(verdicts[0].get("runbook", "")), f"top verdict {verdicts[0].get('cause')}")
