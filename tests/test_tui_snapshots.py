"""Snapshot tests (pytest-textual-snapshot) of every screen from fixed data, cursor blink off.

Update after an intended change: .venv/bin/python -m pytest tests/test_tui_snapshots.py --snapshot-update
"""
from __future__ import annotations

import pytest

from gpusleuth.tui.app import SleuthApp
from tests.tui_helpers import fixed_source, use_utc

use_utc()


def _app(screen: str = "overview", **source_kw) -> SleuthApp:
    return SleuthApp(fixed_source(**source_kw), start_screen=screen, is_cursor_blink=False)


async def _settle(pilot) -> None:
    """Wait for the first frame and for the layout to take it."""
    for _ in range(50):
        if getattr(pilot.app.screen, "frame", None) is not None:
            break
        await pilot.pause(0.05)
    await pilot.pause(0.1)


@pytest.mark.parametrize("screen", ["overview", "gpu", "network", "syscalls", "events"])
def test_screen_at_80x24(snap_compare, screen):
    assert snap_compare(_app(screen), terminal_size=(80, 24), run_before=_settle)


def test_requests_sorted_by_ttft_with_the_slow_one_selected(snap_compare):
    async def select_slowest(pilot):
        await _settle(pilot)
        await pilot.press("t", "enter")
        await pilot.pause(0.4)  # the detail arrives from a worker

    assert snap_compare(_app("requests"), terminal_size=(80, 24), run_before=select_slowest)


def test_overview_without_gpus(snap_compare):
    assert snap_compare(_app(has_gpu=False), terminal_size=(80, 24), run_before=_settle)


def test_overview_scales_up(snap_compare):
    assert snap_compare(_app(), terminal_size=(140, 40), run_before=_settle)


def test_help(snap_compare):
    async def open_help(pilot):
        await _settle(pilot)
        await pilot.press("question_mark")

    assert snap_compare(_app("syscalls"), terminal_size=(80, 24), run_before=open_help)


def test_events_filtered(snap_compare):
    async def filter_gpu(pilot):
        await _settle(pilot)
        await pilot.press("slash", *"source:gpu")
        await pilot.pause(0.1)

    assert snap_compare(_app("events"), terminal_size=(80, 24), run_before=filter_gpu)


def test_replay_cursor_bar(snap_compare):
    async def step_back(pilot):
        await _settle(pilot)
        await pilot.press("left_curly_bracket", "left_square_bracket")
        await pilot.pause(0.2)

    assert snap_compare(_app(with_cursor=True), terminal_size=(80, 24), run_before=step_back)
