"""Snapshot tests (pytest-textual-snapshot) of every screen from fixed data, cursor blink off, at 80x24 (the
target) and 200x60; plus the request report, runbook results, help, filters and the replay cursor bar.

Update after an intended change: .venv/bin/python -m pytest tests/test_tui_snapshots.py --snapshot-update
"""
from __future__ import annotations

import pytest

from gpusleuth.tui.app import SleuthApp
from tests.tui_helpers import fixed_source, use_utc

use_utc()
SIZES = [(80, 24), (200, 60)]
SCREENS = ["overview", "requests", "gpu", "network", "syscalls", "events"]


class FixedRunbooks:
    """A runbook runner with a fixed answer (the real one is tested against a recording in test_tui_runbooks)."""

    def run(self, name: str) -> dict:
        return {"runbook": name, "title": "The engine's step thread waits for a CPU",
                "path": f"/usr/lib/python3/dist-packages/gpusleuth/runbooks/{name}.md", "checks": [
                    {"name": "open cpu_contention incidents", "status": "fail", "figure": 1.0, "unit": "",
                     "fault_if": ">= 1", "detail": "cause=cpu_contention, culprit=backup.sh (pid 31337)",
                     "next": "the incident's culprit (pid, comm) is the task that had the engine's CPU"},
                    {"name": "share of time a watched thread waited runnable (last minute)", "status": "skip",
                     "figure": None, "unit": "s/s", "fault_if": "> 0.05",
                     "detail": "PromQL check: pass --prometheus URL to run it", "next": ""},
                    {"name": "longest run-queue wait of a watched thread in the last 5 min", "status": "fail",
                     "figure": 120.0, "unit": "ms", "fault_if": "> 20", "detail": "kind=runq_delay, comm=gs-step",
                     "next": "the event's culprits are the tasks that ran on that CPU while the thread waited"}]}


def _app(screen: str = "overview", **source_kw) -> SleuthApp:
    return SleuthApp(fixed_source(**source_kw), start_screen=screen, is_cursor_blink=False,
                     runbooks=FixedRunbooks())


async def _settle(pilot) -> None:
    """Wait for the first frame and for the layout to take it."""
    for _ in range(50):
        if getattr(pilot.app.screen, "frame", None) is not None:
            break
        await pilot.pause(0.05)
    await pilot.pause(0.4)  # the first request's detail arrives from a worker


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("screen", SCREENS)
def test_screen(snap_compare, screen, size):
    assert snap_compare(_app(screen), terminal_size=size, run_before=_settle)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_requests_by_e2e_shows_the_slowest_budget_and_verdict(snap_compare, size):
    async def slowest(pilot):
        await _settle(pilot)
        await pilot.press("e")
        await pilot.pause(0.6)  # the detail follows the cursor onto the new top

    assert snap_compare(_app("requests"), terminal_size=size, run_before=slowest)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_request_report(snap_compare, size):
    async def report(pilot):
        await _settle(pilot)
        await pilot.press("e")
        await pilot.pause(0.6)
        await pilot.press("enter")
        await pilot.pause(0.3)

    assert snap_compare(_app("requests"), terminal_size=size, run_before=report)


def test_runbook_checks_of_the_selected_incident(snap_compare):
    async def checks(pilot):
        await _settle(pilot)
        await pilot.press("c")
        await pilot.pause(0.4)

    assert snap_compare(_app(), terminal_size=(80, 24), run_before=checks)


def test_overview_without_gpus(snap_compare):
    assert snap_compare(_app(has_gpu=False), terminal_size=(80, 24), run_before=_settle)


@pytest.mark.parametrize("screen", ["syscalls", "requests"])
def test_help(snap_compare, screen):
    async def open_help(pilot):
        await _settle(pilot)
        await pilot.press("question_mark")

    assert snap_compare(_app(screen), terminal_size=(80, 24), run_before=open_help)


def test_events_filtered_with_a_negation(snap_compare):
    async def filter_gpu(pilot):
        await _settle(pilot)
        await pilot.press("slash", *"-source:gpu")
        await pilot.pause(0.3)

    assert snap_compare(_app("events"), terminal_size=(80, 24), run_before=filter_gpu)


def test_replay_cursor_bar(snap_compare):
    async def step_back(pilot):
        await _settle(pilot)
        await pilot.press("left_curly_bracket", "left_square_bracket")
        await pilot.pause(0.2)

    assert snap_compare(_app(with_cursor=True), terminal_size=(80, 24), run_before=step_back)
