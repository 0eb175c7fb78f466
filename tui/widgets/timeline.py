"""RequestTimeline: one request's phases (queued, prefill, decode steps) as bars, with host events marked under."""
from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static

from gpusleuth.tui import fmt

PHASE_ORDER = ("queued", "prefill", "decode", "step")
PHASE_STYLE = {"queued": "yellow", "prefill": "magenta", "decode": "cyan", "step": "blue"}
EVENT_MARK = {"syscalls": ("s", "red"), "sched": ("r", "yellow"), "net": ("n", "magenta"), "gpu": ("g", "red")}
LABEL_W = 8


def _cols(start: int, end: int, lo: int, span: int, width: int) -> tuple[int, int]:
    a = int((start - lo) * width / span)
    b = int((end - lo) * width / span)
    return max(0, min(width - 1, a)), max(0, min(width, max(b, a + 1)))


def _event_marks(events: list[dict[str, Any]], lo: int, span: int, width: int) -> Text:
    """One letter per host event at its start: s syscall, r run queue, n network, g GPU."""
    row = Text(" " * width)
    for e in events:
        mark, style = EVENT_MARK.get(e.get("source", ""), ("•", "white"))
        a, _ = _cols(e.get("start_ns", lo), e.get("end_ns", lo), lo, span, width)
        row = row[:a] + Text(mark, style=style) + row[a + 1:]
    return row


def timeline_text(detail: dict[str, Any], width: int) -> Text:
    """The request's summary line, a bar row per phase and a row of host-event marks, `width` cells wide."""
    r = detail.get("request") or {}
    head = Text.assemble((f"{r.get('request_id', '?')}", "bold"), f" rank {r.get('rank', '—')} ",
                         (str(r.get("status") or "—"), "bold"),
                         f" e2e {fmt.dur_s(r.get('e2e_s'))} TTFT {fmt.dur_s(r.get('ttft_s'))}"
                         f" TPOT {fmt.dur_s(r.get('tpot_s'))} queue {fmt.dur_s(r.get('queue_s'))}"
                         f" {r.get('prompt_tokens') or '—'}→{r.get('output_tokens') or '—'} tok")
    lo, hi = r.get("start_ns"), r.get("end_ns")
    phases = detail.get("phases") or []
    if lo is None or hi is None:
        return head + Text("\n(no time window: the request has not finished)", style="dim")
    span = max(1, hi - lo)
    bar_w = max(10, width - LABEL_W - 12)
    lines = [head]
    for name in PHASE_ORDER:
        mine = [p for p in phases if p.get("phase") == name]
        if not mine:
            continue
        row = [" "] * bar_w
        for p in mine:
            a, b = _cols(p["start_ns"], p["end_ns"], lo, span, bar_w)
            for i in range(a, b):
                row[i] = "█" if name != "step" else "▌"
        total = sum(p["end_ns"] - p["start_ns"] for p in mine)
        extra = f" ×{len(mine)}" if len(mine) > 1 else ""
        lines.append(Text.assemble(f"{name:<{LABEL_W}}▕", ("".join(row), PHASE_STYLE[name]), "▏",
                                   f" {fmt.dur_ns(total)}{extra}"))
    if not phases:
        lines.append(Text("(no phase spans for this request)", style="dim"))
    if isinstance(detail.get("steps"), int) and not any(p.get("phase") == "step" for p in phases):
        lines.append(Text(f"{'steps':<{LABEL_W}} {detail['steps']} scheduler steps of this engine overlapped it",
                          style="dim"))
    events = detail.get("overlapping") or []
    lines.append(Text.assemble(f"{'host':<{LABEL_W}}▕", _event_marks(events, lo, span, bar_w), "▏",
                               f" {len(events)} events"))
    lines.append(Text(f"{'':<{LABEL_W}} {fmt.dur_ns(0)}{' ' * max(1, bar_w - 10)}{fmt.dur_ns(span)}", style="dim"))
    return Text("\n").join(lines)


class RequestTimeline(Static):
    DEFAULT_CSS = """
    RequestTimeline { height: auto; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("select a request (↑/↓, enter) to see its phases and what overlapped them", id=id)
        self.detail: dict[str, Any] | None = None

    def show_detail(self, detail: dict[str, Any]) -> None:
        self.detail = detail
        self.update(timeline_text(detail, max(40, self.size.width or 80)))

    def on_resize(self) -> None:
        if self.detail is not None:
            self.update(timeline_text(self.detail, max(40, self.size.width or 80)))
