"""The triage screen: a Textual app over a DataSource (live socket, recording, or fixed data); `agent tui` starts it.

Refresh loop (as in dolphie): a timer starts one fetch in a thread worker; the worker hands the Frame to the main
thread, which delivers it to the visible screen and only then arms the next timer, so fetches never overlap and a
slow agent slows the refresh instead of piling up requests.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.timer import Timer
from textual.worker import get_current_worker

from gpusleuth.tui.messages import DetailReady, FrameReady
from gpusleuth.tui.screens.events import EventsScreen
from gpusleuth.tui.screens.gpu import GpuScreen
from gpusleuth.tui.screens.help import HelpScreen
from gpusleuth.tui.screens.network import NetworkScreen
from gpusleuth.tui.screens.overview import OverviewScreen
from gpusleuth.tui.screens.requests import RequestsScreen
from gpusleuth.tui.screens.runbook import RunbookScreen
from gpusleuth.tui.screens.syscalls import SyscallsScreen
from gpusleuth.tui.runbooks import RunbookRunner
from gpusleuth.tui.source import DataSource, Frame, SourceError, Want

SCREENS = (OverviewScreen, RequestsScreen, GpuScreen, NetworkScreen, SyscallsScreen, EventsScreen)
DEFAULT_REFRESH_S = 0.5  # 2 Hz
PARTIAL_RETRY_S = 1.0


class SleuthApp(App):
    """Keyboard-first: tab / shift+tab or 1-6 between screens, ? help, / filter, q quit."""

    CSS_PATH = Path(__file__).with_name("gpusleuth.tcss")  # absolute: subclasses elsewhere find it too
    TITLE = "gpusleuth"
    ENABLE_COMMAND_PALETTE = False
    MODES = {s.KEY: s for s in SCREENS}
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("ctrl+q", "quit", "Quit", show=False),
        Binding("question_mark", "help", "Help"),
        Binding("tab", "cycle_screen(1)", "Next screen", priority=True),
        Binding("shift+tab", "cycle_screen(-1)", "Previous screen", show=False, priority=True),
        Binding("slash", "filter", "Filter"),
        Binding("r", "refresh_now", "Refresh", show=False),
        Binding("p", "pause", "Pause", show=False),
        *[Binding(str(i), f"show_screen('{s.KEY}')", s.LABEL, show=False) for i, s in enumerate(SCREENS, 1)],
    ]
    REPLAY_BINDINGS = [
        Binding("left_square_bracket", "seek(-1)", "Back 1 s", show=False),
        Binding("right_square_bracket", "seek(1)", "Forward 1 s", show=False),
        Binding("left_curly_bracket", "seek(-10)", "Back 10 s", show=False),
        Binding("right_curly_bracket", "seek(10)", "Forward 10 s", show=False),
        Binding("less_than_sign", "seek_edge(0)", "Start", show=False),
        Binding("greater_than_sign", "seek_edge(1)", "End", show=False),
        Binding("space", "pause", "Play/pause", show=False),
    ]

    def __init__(self, source: DataSource, refresh_s: float = DEFAULT_REFRESH_S, start_screen: str = "overview",
                 speed: float = 1.0, is_cursor_blink: bool = True, runbooks: RunbookRunner | None = None) -> None:
        super().__init__()
        self.runbooks = runbooks  # runs a runbook's checks (`c`); None: the screens say how to run them instead
        self.is_cursor_blink = is_cursor_blink  # off in snapshot tests, so screenshots do not depend on timing
        self.source = source
        self.refresh_s = refresh_s
        self.start_screen = start_screen
        self.speed = speed  # replay: recording seconds per wall second while playing
        self.last_frame: Frame | None = None
        self.is_paused = source.has_cursor  # a replay starts still; a live view starts running
        self.is_playing = False
        self.frames = 0
        self.first_frame_at = self.last_frame_at = 0.0
        self._timer: Timer | None = None
        self._is_fetching = False
        self._due = 0.0  # when the pending (or running) fetch was due
        self._wants_refresh = False
        self._cursor_moves: list[Callable[[], None]] = []
        if source.has_cursor:
            for b in self.REPLAY_BINDINGS:
                self.bind(b.key, b.action, description=b.description, show=b.show)

    # --- screens ----------------------------------------------------------------------------------------------
    def on_mount(self) -> None:
        self.switch_mode(self.start_screen)
        self._arm(0)

    def screen_list(self) -> list[tuple[str, str]]:
        return [(s.KEY, s.LABEL) for s in SCREENS]

    def flag_text(self) -> str:
        if self.source.has_cursor:
            return f"REPLAY ▶ ×{self.speed:g}" if self.is_playing else "REPLAY"
        return "PAUSED" if self.is_paused else ""

    def action_show_screen(self, key: str) -> None:
        if key != self.current_mode:
            self.switch_mode(key)
            self.action_refresh_now()  # the new screen may want sources the last refresh did not fetch

    def action_cycle_screen(self, step: int) -> None:
        keys = [s.KEY for s in SCREENS]
        self.action_show_screen(keys[(keys.index(self.current_mode) + step) % len(keys)])

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))  # the keys active on the screen underneath, right now

    def run_runbook(self, runbook: str, why: str) -> None:
        """Run a runbook's checks (its name or path) and show the results in a modal."""
        if not isinstance(self.screen, RunbookScreen):
            self.push_screen(RunbookScreen(runbook, why, self.runbooks))

    def action_filter(self) -> None:
        base = self.base_screen()
        if hasattr(base, "action_filter") and base is self.screen:
            base.action_filter()

    def base_screen(self):
        """The current mode's screen (the help modal may be on top of it); None while shutting down."""
        stack = self.get_screen_stack()
        return stack[0] if stack else None

    # --- refresh loop -----------------------------------------------------------------------------------------
    def _arm(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._due = time.monotonic() + max(0.0, delay)
        self._timer = self.set_timer(max(delay, 0.001), self._start_fetch)  # Textual's timers reject 0

    def _start_fetch(self) -> None:
        if self.base_screen() is None:
            return  # the app is closing
        if self._is_fetching:
            self._wants_refresh = True
            return
        moves, self._cursor_moves = self._cursor_moves, []
        for move in moves:  # main thread, and no fetch is running: the worker never sees the cursor move
            move()
        if self.is_playing:
            self.source.seek(self.refresh_s * self.speed)
            info = self.source.cursor_info()
            if info and info["cursor_ns"] >= info["end_ns"]:
                self.is_playing, self.is_paused = False, True
        self._is_fetching = True
        self._fetch(getattr(self.base_screen(), "WANT", Want()))

    @work(thread=True, group="refresh")
    def _fetch(self, want: Want) -> None:
        try:
            frame, error = self.source.fetch(want), ""
        except SourceError as exc:
            frame, error = None, str(exc)
        if not get_current_worker().is_cancelled:
            self.call_from_thread(self._on_fetched, frame, error)

    def _on_fetched(self, frame: Frame | None, error: str) -> None:
        self._is_fetching = False
        if frame is None:  # keep showing the last good data, under a banner saying why it is old
            frame = replace(self.last_frame, error=error) if self.last_frame is not None else Frame(error=error)
        self.last_frame = frame
        self.frames += 1
        self.last_frame_at = time.monotonic()
        if self.frames == 1:
            self.first_frame_at = self.last_frame_at
        base = self.base_screen()
        if base is None:
            return  # the app is closing
        base.post_message(FrameReady(frame))
        if self._wants_refresh:
            self._wants_refresh = False
            self._arm(0)
        elif frame.is_partial and (self.is_paused and not self.is_playing):
            self._arm(PARTIAL_RETRY_S)  # the rest is being computed (a replay's diagnosis): look again soon
        elif not self.is_paused or self.is_playing:
            # fixed rate: the next fetch is due one period after this one was due, so neither the fetch time nor
            # timer lateness slows the refresh below 1/refresh_s; fetches still never overlap
            self._arm(self._due + self.refresh_s - time.monotonic())

    def action_refresh_now(self) -> None:
        self._arm(0)

    def action_pause(self) -> None:
        if self.source.has_cursor:
            self.is_playing = not self.is_playing
            self.is_paused = not self.is_playing
        else:
            self.is_paused = not self.is_paused
        if not self.is_paused:
            self._arm(0)
        elif self.last_frame is not None and self.base_screen() is not None:
            self.base_screen().post_message(FrameReady(self.last_frame))  # redraw the PAUSED flag

    # --- replay cursor ----------------------------------------------------------------------------------------
    def action_seek(self, delta_s: float) -> None:
        self._move_cursor(lambda: self.source.seek(delta_s))

    def action_seek_edge(self, to_end: int) -> None:
        self._move_cursor(lambda: self.source.seek_edge(bool(to_end)))

    def _move_cursor(self, move: Callable[[], None]) -> None:
        self._cursor_moves.append(move)  # applied by the next fetch's start, never while a worker reads it
        self._arm(0)

    # --- request detail ---------------------------------------------------------------------------------------
    @work(thread=True, group="detail", exclusive=True)
    def fetch_detail(self, request: dict[str, Any], screen) -> None:
        """Ask the source for one request's phases and overlapping events; the screen gets a DetailReady."""
        rid = str(request.get("request_id"))
        try:
            message = DetailReady(rid, self.source.request_detail(request))
        except SourceError as exc:
            message = DetailReady(rid, None, str(exc))
        if not get_current_worker().is_cancelled:
            self.call_from_thread(screen.post_message, message)

    async def action_quit(self) -> None:
        self.source.abort()  # wake a worker blocked on the socket so the process exits at once
        self.exit(0)


def run(source: DataSource, args: argparse.Namespace, runbooks: RunbookRunner | None = None) -> int:
    """Show `source` until the user quits (flags from launch.parser()); the app's exit code."""
    app = SleuthApp(source, refresh_s=args.refresh, start_screen=args.screen, speed=args.speed, runbooks=runbooks)
    try:
        app.run()
    finally:
        source.close()
    if args.frames_out:  # for benchmarks/bench_tui.py: the refresh rate reached after the first frame
        with open(args.frames_out, "w") as fh:
            json.dump({"frames": app.frames - 1, "seconds": app.last_frame_at - app.first_frame_at}, fh)
    return app.return_code or 0
