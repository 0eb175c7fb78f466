"""Syscalls and scheduler detail: per (process, syscall) latency over the last window, and run-queue latency."""
from __future__ import annotations

from typing import Any, Iterable

from rich.text import Text
from textual.binding import Binding
from textual.containers import Vertical
from textual.widget import Widget

from gpusleuth.tui import fmt, views
from gpusleuth.tui.idle import is_idle_row
from gpusleuth.tui.screens.base import DATA_ERRORS, DataScreen
from gpusleuth.tui.source import Frame, Want
from gpusleuth.tui.widgets.panel import Panel
from gpusleuth.tui.widgets.row_table import RowTable

SORT_CYCLE = ("p99", "count", "total")
SORT_LABEL = {"p99": "p99 latency", "count": "calls", "total": "total time"}
ROWS_SHOWN = 200


def latency_cells(r: dict[str, Any], window_s: float, has_syscall: bool) -> tuple:
    who = (str(r["pid"]), fmt.trunc(r.get("comm", ""), 16))
    name = fmt.trunc(r.get("syscall", ""), 18)
    what = ((Text(name, style="dim") if is_idle_row(r) else name),) if has_syscall else ()
    return (*who, *what, str(r["count"]), f"{r['count'] / window_s:.0f}", fmt.dur_ns(r["avg_ns"]),
            fmt.dur_ns(r["p50_ns"]), fmt.dur_ns(r["p99_ns"]), fmt.dur_ns(r["max_ns"]), fmt.dur_ns(r["sum_ns"]))


class SyscallsScreen(DataScreen):
    KEY, LABEL = "syscalls", "Syscalls"
    WANT = Want(sources=frozenset({"agent", "syscalls", "sched"}))
    HAS_FILTER = True
    HAS_IDLE_TOGGLE = True
    FILTER_FIELDS = "pid comm syscall"
    BINDINGS = [Binding("s", "cycle_sort", "Sort: p99, calls, total"),
                Binding("i", "toggle_idle", "Show / hide idle waits")]

    def __init__(self) -> None:
        super().__init__()
        self.sort = "p99"
        self._memos: dict[str, views.Memo] = {}

    def compose_body(self) -> Iterable[Widget]:
        with Vertical(id="sys-body"):
            yield Panel("Syscalls", id="sys-title")
            yield RowTable("pid", "process", "syscall", "calls", "/s", "avg", "p50", "p99", "≤max", "total",
                            id="sys-table")
            yield Panel("Run queue (time runnable before running)", id="runq-title")
            yield RowTable("pid", "process", "waits", "/s", "avg", "p50", "p99", "≤max", "total", id="runq-table")

    def action_cycle_sort(self) -> None:
        self.sort = SORT_CYCLE[(SORT_CYCLE.index(self.sort) + 1) % len(SORT_CYCLE)]
        if self.frame is not None:
            self.show_frame(self.frame)

    def show_frame(self, frame: Frame) -> None:
        for key, probe, table_id, title_id, noun in (("syscalls", "syscalls", "#sys-table", "#sys-title", "syscalls"),
                                                     ("runq", "sched", "#runq-table", "#runq-title", "processes")):
            title = self.query_one(title_id, Panel)
            rows = frame.windows.get(key)
            reason = views.missing_reason(frame, probe)
            try:
                if rows is None or (not rows and reason):
                    title.show_missing(reason or "no data")
                    rows = []
                else:
                    memo = self._memos.setdefault(key, views.Memo())
                    rows = memo.get(rows, (self.filter_text, self.sort, self.is_idle_shown),
                                    lambda: self._ranked(rows, frame, key))
                    title.show(self._title(frame, key, len(rows), noun))
                self.query_one(table_id, RowTable).show_rows(rows)
            except DATA_ERRORS as exc:
                title.show_missing(f"unexpected {probe} data ({type(exc).__name__}: {exc})")

    def _ranked(self, rows: list[dict[str, Any]], frame: Frame, key: str) -> list[tuple[str, tuple]]:
        ranked = views.top_latency(rows, ROWS_SHOWN, self.filter_text, self.sort,
                                   is_waits_hidden=key == "syscalls" and not self.is_idle_shown)
        return [(f"{r['pid']}/{r.get('syscall', '')}", latency_cells(r, frame.window_s, key == "syscalls"))
                for r in ranked]

    def _title(self, frame: Frame, key: str, n: int, noun: str) -> Text:
        note = frame.notes.get(f"window.{key}") or frame.notes.get("window.buckets") or ""
        text = f"{n} {noun} active in the last {frame.window_s:.0f} s, by {SORT_LABEL[self.sort]} (s: sort)"
        if key == "syscalls":
            text += "; dim: idle waits" if self.is_idle_shown else "; idle waits hidden (i)"
        if self.filter_text:
            text += f", filter '{self.filter_text}'"
        return Text(text + (f" — {note}" if note else ""), style="dim")
