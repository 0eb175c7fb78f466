"""Pilot tests of the triage keys on fixed data and on a recorded fault window: idle waits hidden by default (`i`),
filter negation, help built from the active bindings, sorting that keeps the held request, the report view, and
runbook checks (`c`) run for real against the recording."""
from __future__ import annotations

import pytest

from gpusleuth.agent.cli.tui_runbooks import RunbookRunner
from gpusleuth.agent.recording.replay import Replay
from gpusleuth.tui.app import SleuthApp
from gpusleuth.tui.idle import is_idle_event
from gpusleuth.tui.screens.help import HelpScreen
from gpusleuth.tui.screens.request_detail import RequestDetailScreen
from gpusleuth.tui.screens.runbook import RunbookScreen
from gpusleuth.tui.source_recording import RecordingSource
from tests.recording_helpers import fault_recording
from tests.tui_helpers import fixed_frame, fixed_source, panel_text, table_rows, until

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


def _app(screen: str, **kw) -> SleuthApp:
    return SleuthApp(fixed_source(), start_screen=screen, **kw)


async def test_events_hide_idle_waits_until_i_and_filters_negate():
    events = fixed_frame().events
    idle = [e for e in events if is_idle_event(e)]
    assert {e["kind"] for e in idle} == {"slow_syscall", "offcpu"}  # the fixture has both kinds of idle wait
    app = _app("events")
    async with app.run_test(size=(100, 30)) as pilot:
        rows = await until(pilot, lambda: table_rows(app, "events-table"), what="events")
        assert len(rows) == len(events) - len(idle) and not any("epoll_wait" in r[4] for r in rows)
        assert f"{len(idle)} idle waits hidden" in panel_text(app, "events-title")
        await pilot.press("i")
        await pilot.pause(0.2)
        assert len(table_rows(app, "events-table")) == len(events)
        await pilot.press("slash", *"-kind:slow_syscall !source:net")
        await pilot.pause(0.4)
        rows = table_rows(app, "events-table")
        want = [e for e in events if e["kind"] != "slow_syscall" and e["source"] != "net"]
        assert sorted(r[1] for r in rows) == sorted(e["kind"] for e in want) and rows
        await pilot.press("escape")
        app.screen.query_one("#filter").focus()
        await pilot.press(*"syscall:epoll")  # an attribute as a field
        await pilot.pause(0.4)
        assert [r[4] for r in table_rows(app, "events-table")] == ["epoll_wait took 11.8ms"]


async def test_syscalls_hide_idle_waits_until_i():
    app = _app("syscalls")
    async with app.run_test(size=(100, 30)) as pilot:
        rows = await until(pilot, lambda: table_rows(app, "sys-table"), what="syscall rows")
        assert "futex" not in [r[2] for r in rows] and "read" in [r[2] for r in rows]
        await pilot.press("i")
        await pilot.pause(0.2)
        rows = table_rows(app, "sys-table")
        assert "futex" in [r[2] for r in rows] and "idle waits" in panel_text(app, "sys-title")


async def test_help_lists_the_keys_that_work_here():
    app = _app("requests")
    async with app.run_test(size=(100, 40)) as pilot:
        await until(pilot, lambda: app.screen.frame is not None, what="a frame")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = str(app.screen.query_one("#help-text").render())
        assert "Next screen" in text and "Focus Next" not in text  # tab is the app's (priority), not focus
        for line in ("Sort by e2e", "Run the top verdict's runbook checks", "Top (follow it)", "-kind:slow_syscall"):
            assert line in text, line
        await pilot.press("escape")
        await pilot.press("6", "question_mark")
        text = str(app.screen.query_one("#help-text").render())
        assert "Show / hide idle waits" in text and "epoll_wait" in text and "state S" in text


async def test_sorting_keeps_the_held_request_and_the_detail_follows():
    app = _app("requests")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: table_rows(app, "req-table"), what="requests")
        table = app.screen.query_one("#req-table")
        await pilot.press("down", "down", "down")
        held = table.cursor_key
        await until(pilot, lambda: app.screen._detail_id == held, what="the detail of the held request")
        for key in ("e", "t", "o", "n"):
            await pilot.press(key)
            await pilot.pause(0.1)
            assert table.cursor_key == held, key
        await pilot.press("home", "e")  # follow the top: the slowest by e2e
        await until(pilot, lambda: table.cursor_key == "4242/cmpl-0007", what="the slowest on top")
        summary = await until(pilot, lambda: "cpu_contention" in str(app.screen.query_one("#req-summary").render())
                              and str(app.screen.query_one("#req-summary").render()), what="its verdict")
        assert "backup.sh (pid 31337" in summary and "cpu-contention.md" in summary
        await pilot.press("enter")
        assert isinstance(app.screen, RequestDetailScreen)
        text = await until(pilot, lambda: "queueing" in str(app.screen.query_one("#detail-text").render())
                           and str(app.screen.query_one("#detail-text").render()), what="the full report")
        assert "2. queueing" in text and "Host events on its path" in text


@pytest.fixture(scope="module")
def fault(tmp_path_factory):
    return fault_recording(tmp_path_factory.mktemp("fault"), "cpu_hog_fifo")


async def test_incident_runbook_checks_run_against_the_recording(fault):
    root, truth = fault
    replay = Replay(root)
    app = SleuthApp(RecordingSource(replay), runbooks=RunbookRunner.recording(replay))
    async with app.run_test(size=(80, 24)) as pilot:
        box = app.screen.query_one("#ov-incidents-box")
        await until(pilot, lambda: box.selected() is not None, timeout=30, what="the recorded incident")
        chosen = box.selected()
        assert chosen["cause"] == truth["cause"] and chosen["culprit"]["comm"] == truth["culprit"]["comm"]
        assert chosen["runbook"] in box.shown_text
        await pilot.press("c")
        assert isinstance(app.screen, RunbookScreen)
        result = await until(pilot, lambda: app.screen.result, timeout=60, what="the checks' results")
        checks = {c["name"]: c for c in result["checks"]}
        assert checks["open cpu_contention incidents"]["status"] == "fail"  # confirmed, as the fault was real
        assert checks["share of time a watched thread waited runnable (last minute)"]["status"] == "skip"
        text = str(app.screen.query_one("#runbook-text").render())
        assert "FAIL  open cpu_contention incidents: 1" in text and "next:" in text


async def test_after_a_sort_the_detail_follows_the_new_top_at_once():
    app = _app("requests")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.screen._detail_id, what="the first request's detail")
        await pilot.pause(0.3)
        await pilot.press("e")  # the following cursor lands on the slowest: its verdict, not the previous top's
        await until(pilot, lambda: "cpu_contention" in str(app.screen.query_one("#req-summary").render()),
                    timeout=1.0, what="the slowest request's verdict within a second of the sort")
