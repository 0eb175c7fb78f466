"""Requests: recent requests sortable by TTFT / TPOT / e2e; the highlighted one's phase timeline and the host
events that overlapped it (from the agent's `explain`, or from events in its window where that is missing)."""
from __future__ import annotations

from typing import Any, Iterable

from rich.text import Text
from textual.binding import Binding
from textual.containers import Vertical
from textual.widget import Widget

from gpusleuth.tui import fmt, views
from gpusleuth.tui.messages import DetailReady
from gpusleuth.tui.screens.base import DataScreen
from gpusleuth.tui.source import Frame, Want
from gpusleuth.tui.widgets.panel import Panel
from gpusleuth.tui.widgets.row_table import RowTable
from gpusleuth.tui.widgets.timeline import RequestTimeline

SORTS = {"newest": ("end_ns", "newest first"), "ttft": ("ttft_s", "TTFT"), "tpot": ("tpot_s", "TPOT"),
         "e2e": ("e2e_s", "e2e")}
DETAIL_DELAY_S = 0.25  # wait for the cursor to settle before asking the agent


def sort_requests(reqs: list[dict[str, Any]], sort: str, text_filter: str = "") -> list[dict[str, Any]]:
    """Slowest first for latency sorts; unfinished requests (no value) last."""
    needle = text_filter.lower()
    if needle:
        reqs = [r for r in reqs if needle in f"{r.get('request_id')} {r.get('status')} {r.get('pid')}".lower()]
    field = SORTS[sort][0]
    return sorted(reqs, key=lambda r: (r.get(field) is None, -(r.get(field) or 0)))


def request_cells(r: dict[str, Any]) -> tuple:
    return (fmt.trunc(str(r.get("request_id")), 24), str(r.get("rank", "—")), str(r.get("status") or "—"),
            fmt.dur_s(r.get("queue_s")), fmt.dur_s(r.get("ttft_s")), fmt.dur_s(r.get("tpot_s")),
            fmt.dur_s(r.get("e2e_s")), f"{r.get('prompt_tokens') or '—'}→{r.get('output_tokens') or '—'}")


class RequestsScreen(DataScreen):
    KEY, LABEL = "requests", "Requests"
    WANT = Want(sources=frozenset({"agent"}), is_requests=True)  # `requests` is smaller than the span snapshot
    HAS_FILTER = True
    BINDINGS = [
        Binding("t", "sort('ttft')", "TTFT"), Binding("o", "sort('tpot')", "TPOT"),
        Binding("e", "sort('e2e')", "e2e"), Binding("n", "sort('newest')", "Newest"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.sort = "newest"
        self._rows: dict[str, dict[str, Any]] = {}
        self._cells: dict[str, tuple] = {}
        self._detail_id = ""
        self._detail_timer = None

    def compose_body(self) -> Iterable[Widget]:
        with Vertical(id="requests-body"):
            yield Panel("Requests", id="req-title")
            # no zebra stripes: new requests shift every row, and a row's look must not depend on its position
            yield RowTable("request", "rank", "status", "queue", "TTFT", "TPOT", "e2e", "in→out", id="req-table",
                           zebra_stripes=False)
            yield Panel("Phases and overlapping host events", id="req-detail-title")
            yield RequestTimeline(id="req-timeline")
            yield RowTable("at", "kind", "process", "duration", "detail", id="req-events", zebra_stripes=False)

    def action_sort(self, sort: str) -> None:
        self.sort = sort
        if self.frame is not None:
            self.show_frame(self.frame)
        table = self.query_one("#req-table", RowTable)
        if table.row_count:
            table.move_cursor(0)  # a new order starts at its top: the slowest

    def show_frame(self, frame: Frame) -> None:
        title = self.query_one("#req-title", Panel)
        if frame.requests is None:
            title.show_missing(frame.notes.get("requests") or views.missing_reason(frame, "spans") or "no requests")
            return
        if not frame.requests:
            spans = (frame.status.get("probes") or {}).get("spans")
            is_ok = spans is not None and spans.get("state") in ("ok", "degraded", "recorded")
            title.show_missing("no finished requests yet: engines send their spans to the agent's span socket"
                               if is_ok else views.missing_reason(frame, "spans") or "no requests")
        reqs = sort_requests(frame.requests, self.sort, self.filter_text)
        if reqs or frame.requests:
            title.show(Text(f"{len(reqs)} requests by {SORTS[self.sort][1]}"
                            + (f", filter '{self.filter_text}'" if self.filter_text else "")
                            + " · sort: t TTFT o TPOT e e2e n newest", style="dim"))
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
        self.query_one("#req-table", RowTable).show_rows(rows)
        if rows and not self._detail_id:
            self._ask_detail(rows[0][0])  # show something at once; afterwards only the user's moves fetch

    def on_row_table_highlighted(self, event: RowTable.Highlighted) -> None:
        if event.table.id != "req-table":
            return
        rid = event.key
        if rid == self._detail_id:
            return  # the same request moved in the list: its detail is already shown
        if self._detail_timer is not None:
            self._detail_timer.stop()
        self._detail_timer = self.set_timer(DETAIL_DELAY_S, lambda: self._ask_detail(rid))

    def on_row_table_selected(self, event: RowTable.Selected) -> None:
        if event.table.id == "req-table":
            self._ask_detail(event.key)

    def _ask_detail(self, rid: str) -> None:
        req = self._rows.get(rid)
        if req is not None and rid != self._detail_id:
            self._detail_id = rid
            self.app.fetch_detail(req, self)

    def on_detail_ready(self, message: DetailReady) -> None:
        if message.request_id != self._detail_id.split("/", 1)[-1]:
            return  # an older answer; the cursor has moved on
        timeline = self.query_one(RequestTimeline)
        if message.detail is None:
            timeline.update(Text(f"no detail: {message.error}", style="dim"))
            return
        timeline.show_detail(message.detail)
        self._fill_events(message.detail)

    def _fill_events(self, detail: dict[str, Any]) -> None:
        rows = []
        start = (detail.get("request") or {}).get("start_ns") or 0
        for i, v in enumerate(detail.get("verdicts") or []):
            rows.append((f"v{i}", ("verdict", str(v.get("cause", "?")), f"score {v.get('score', 0):.2f}", "",
                                   fmt.trunc(f"{v.get('evidence', '')}  → {v.get('runbook', '')}", 120))))
        for i, e in enumerate(sorted(detail.get("overlapping") or [], key=lambda e: e.get("start_ns", 0))):
            rows.append((f"e{i}", (f"+{fmt.dur_ns(max(0, e.get('start_ns', 0) - start))}", e.get("kind", ""),
                                   views.who(e), fmt.dur_ns(e.get("end_ns", 0) - e.get("start_ns", 0)),
                                   fmt.trunc(views.event_detail(e), 120))))
        notes = detail.get("notes") or {}
        if notes and not rows:
            rows.append(("note", ("", "note", "", "", "; ".join(notes.values()))))
        self.query_one("#req-events", RowTable).show_rows(rows)
