"""One-line bars around every screen: the title (screens, clock), the probe status line and the replay cursor."""
from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static

from gpusleuth.tui import fmt
from gpusleuth.tui.views import STATE_MARK, probe_states

STATE_STYLE = {"ok": "green", "recorded": "green", "degraded": "yellow", "unavailable": "red", "stopped": "dim",
               "absent": "dim"}


class TextLine(Static):
    """A Static that repaints (and re-lays out) only when its text changes: most 2 Hz refreshes change nothing."""

    def __init__(self, text: Text | None = None, *, id: str | None = None) -> None:
        super().__init__(text or "", id=id)
        self._text: Text | None = text

    def set_text(self, text: Text) -> None:
        if self._text is None or text != self._text:
            self._text = text
            self.update(text)

    @property
    def plain(self) -> str:
        return self._text.plain if self._text is not None else ""


class TitleBar(TextLine):
    """`gpusleuth  1 Overview 2 Requests … 12:04:05` with the current screen highlighted."""

    DEFAULT_CSS = """
    TitleBar { dock: top; height: 1; background: $panel; }
    """

    def render_title(self, screens: list[tuple[str, str]], current: str, clock: str, flag: str = "") -> None:
        width = self.size.width or 80
        tail = Text.assemble((f" {flag} " if flag else "", "bold yellow"), (clock, ""))
        text = self._tabs(screens, current, is_compact=False)
        if text.cell_len + tail.cell_len + 1 > width:  # narrow terminal: only the current screen is spelled out
            text = self._tabs(screens, current, is_compact=True)
        pad = width - text.cell_len - tail.cell_len
        if pad > 0:
            text.append(" " * pad)
        text.append_text(tail)
        self.set_text(text)

    @staticmethod
    def _tabs(screens: list[tuple[str, str]], current: str, is_compact: bool) -> Text:
        text = Text.assemble(("gpusleuth ", "bold"))
        for i, (key, label) in enumerate(screens, 1):
            if key == current:
                text.append(f"{i} {label}", style="reverse bold")
                text.append(" ")
            else:
                text.append(f"{i}", style="bold")
                text.append(" " if is_compact else f" {label} ", style="dim")
        return text


class StatusLine(TextLine):
    """Probe states, or the reason the source is not answering, plus where the data comes from."""

    DEFAULT_CSS = """
    StatusLine { height: 1; background: $panel; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._flash: Text | None = None
        self._last: tuple | None = None

    def flash(self, message: str, seconds: float = 4.0) -> None:
        """Say something in place of the probe states for a few seconds (instead of a toast over the screen)."""
        self._flash = Text(f"» {message}", style="bold yellow")
        self.set_text(self._flash)
        self.set_timer(seconds, self._end_flash)

    def _end_flash(self) -> None:
        self._flash = None
        if self._last is not None:
            self.render_status(*self._last)

    def render_status(self, status: dict[str, Any], label: str, error: str = "") -> None:
        self._last = (status, label, error)
        if self._flash is not None:
            return
        if error:
            self.set_text(Text(f"⚠ {error} — retrying", style="bold red"))
            return
        text = Text()
        for name, state, reason in probe_states(status):
            text.append(f"{STATE_MARK.get(state, '?')} {name} ", style=STATE_STYLE.get(state, ""))
        up = status.get("uptime_s")
        up_text = f"up {fmt.uptime(up)} · " if up is not None else ""
        text.append(f"· {up_text}{label}", style="dim")
        self.set_text(text)


class CursorBar(TextLine):
    """Replay position: wall time at the cursor, a position gauge and the keys that move it."""

    DEFAULT_CSS = """
    CursorBar { height: 1; background: $boost; }
    """

    def render_cursor(self, info: dict[str, Any], is_playing: bool) -> None:
        if not info:
            return
        c, lo, hi = info["cursor_ns"], info["start_ns"], info["end_ns"]
        head = Text.assemble(("▶ " if is_playing else "⏸ ", "bold"),
                             (fmt.clock(c, info.get("wall_offset_ns", 0), is_ms=True), "bold"),
                             f" {fmt.dur_ns(c - lo)}/{fmt.dur_ns(hi - lo)} ")
        keys = Text(" [ ] ±1s  { } ±10s  < > ends  space play", style="dim")
        width = max(10, (self.size.width or 80) - head.cell_len - keys.cell_len - 2)
        pos = 0 if hi <= lo else int((c - lo) * (width - 1) / (hi - lo))
        gauge = Text("━" * pos, style="cyan") + Text("╋", style="bold") + Text("─" * (width - 1 - pos), style="dim")
        self.set_text(head + Text("[") + gauge + Text("]") + keys)
