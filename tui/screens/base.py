"""DataScreen: what every screen shares: title bar, probe status line, replay cursor, footer, frame delivery."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer

from gpusleuth.tui import fmt
from gpusleuth.tui.messages import FrameReady
from gpusleuth.tui.source import Frame, Want
from gpusleuth.tui.widgets.bars import CursorBar, StatusLine, TitleBar
from gpusleuth.tui.widgets.filter_bar import FilterBar

if TYPE_CHECKING:
    from gpusleuth.tui.app import SleuthApp

# Panels catch these when a probe's snapshot is not shaped as expected, and say which source was at fault.
DATA_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError)
FILTER_DELAY_S = 0.15


class DataScreen(Screen):
    """Subclasses set KEY/LABEL/WANT, yield their body from compose_body() and draw frames in show_frame()."""

    KEY = ""
    LABEL = ""
    WANT = Want()
    HAS_FILTER = False
    FILTER_FIELDS = ""  # the `field:` names this screen's filter knows (help shows them)
    HAS_IDLE_TOGGLE = False  # `i` shows / hides idle waits (tui/idle.py)
    AUTO_FOCUS = "RowTable"
    app: "SleuthApp"

    def __init__(self) -> None:
        super().__init__()
        self.frame: Frame | None = None
        self.filter_text = ""
        self._filter_timer = None
        self.is_idle_shown = False

    def compose(self) -> ComposeResult:
        yield TitleBar()
        if self.HAS_FILTER:
            bar = FilterBar(id="filter", is_sticky=self.KEY == "events")
            bar.cursor_blink = self.app.is_cursor_blink
            yield bar
        yield from self.compose_body()
        yield StatusLine()
        if self.app.source.has_cursor:
            yield CursorBar()
        yield Footer()

    def compose_body(self) -> Iterable[Widget]:
        raise NotImplementedError

    def on_screen_resume(self) -> None:
        if self.app.last_frame is not None and self.app.last_frame is not self.frame:
            self.post_message(FrameReady(self.app.last_frame))
        self._draw_chrome()

    def on_frame_ready(self, message: FrameReady) -> None:
        self.frame = message.frame
        self._draw_chrome()
        self.show_frame(message.frame)

    def on_resize(self) -> None:
        self._draw_chrome()
        if self.frame is not None:
            self.show_frame(self.frame)

    def _draw_chrome(self) -> None:
        app, frame = self.app, self.frame
        clock = fmt.clock(frame.t_ns, frame.wall_offset_ns) if frame and frame.t_ns else ""
        self.query_one(TitleBar).render_title(app.screen_list(), self.KEY, clock, app.flag_text())
        if frame is not None:
            self.query_one(StatusLine).render_status(frame.status, app.source.label, frame.error)
        if app.source.has_cursor:
            self.query_one(CursorBar).render_cursor(app.source.cursor_info(), app.is_playing)

    def show_frame(self, frame: Frame) -> None:
        raise NotImplementedError

    # --- filter -------------------------------------------------------------------------------------------------
    def flash(self, message: str) -> None:
        """A short message on the status line (toasts would cover it)."""
        self.query_one(StatusLine).flash(message)

    def action_filter(self) -> None:
        if not self.HAS_FILTER:
            self.flash(f"the {self.LABEL} screen has no filter; Requests, Syscalls and Events do")
            return
        self.query_one(FilterBar).open()

    def action_toggle_idle(self) -> None:
        self.is_idle_shown = not self.is_idle_shown
        self.flash("idle waits shown (i hides them)" if self.is_idle_shown else
                   "idle waits hidden (i shows them): waiting syscalls and S-state sleeps, see ? for the rule")
        self._redraw()

    def on_filter_bar_updated(self, message: FilterBar.Updated) -> None:
        self.filter_text = message.value
        if self._filter_timer is not None:
            self._filter_timer.stop()
        # redraw once typing pauses: rebuilding a long table on every keystroke makes typing lag
        self._filter_timer = self.set_timer(FILTER_DELAY_S, self._redraw)

    def _redraw(self) -> None:
        if self.frame is not None:
            self.show_frame(self.frame)
