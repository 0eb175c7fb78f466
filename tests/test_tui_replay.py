"""`agent tui --recording DIR`: Pilot tests of every screen and key on the recorded fixture (tests/fixtures/
tui_recording: a real agent and the tiny engine on a CPU box), checked against the parquet files themselves."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from gpusleuth.tui import fmt
from gpusleuth.tui.app import SCREENS, SleuthApp
from gpusleuth.tui.screens.help import HelpScreen
from gpusleuth.tui.screens.request_detail import RequestDetailScreen
from gpusleuth.agent.recording.replay import Replay
from gpusleuth.tui.source_recording import RecordingSource
from tests.tui_helpers import panel_text, table_rows, until

pytestmark = pytest.mark.anyio
FIXTURE = Path(__file__).parent / "fixtures" / "tui_recording"
S = 1_000_000_000


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def recorded():
    events = pd.read_parquet(FIXTURE / "events")
    events["attrs"] = events["attrs"].map(json.loads)
    return events


def _app(screen: str = "overview") -> SleuthApp:
    return SleuthApp(RecordingSource(Replay(FIXTURE)), start_screen=screen)


async def test_overview_from_the_recording(recorded):
    app = _app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.screen.frame is not None, what="a first frame drawn")
        sleeper = recorded[recorded["kind"] == "slow_syscall"]["comm"].mode()[0]
        assert sleeper in panel_text(app, "ov-syscalls") and "~" in panel_text(app, "ov-syscalls")  # averages
        assert panel_text(app, "ov-gpu") == "no data: no gpu records in this recording"
        assert panel_text(app, "ov-net") == "no data: no net records in this recording"
        finished = recorded[recorded["kind"] == "request.finished"]
        assert f"{len(finished)} req" in panel_text(app, "ov-engine")
        assert "REPLAY" in app.screen.query_one("TitleBar").plain


async def test_requests_sorted_and_explained_from_spans(recorded):
    app = _app("requests")
    finished = recorded[recorded["kind"] == "request.finished"]
    slowest = max(finished["attrs"], key=lambda a: a["ttft_s"])["request_id"]
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: len(table_rows(app, "req-table")) == len(finished), what="recorded requests")
        await pilot.press("t")
        await pilot.pause(0.1)
        top = table_rows(app, "req-table")[0][0]
        ttft = {a["request_id"]: a["ttft_s"] for a in finished["attrs"]}
        assert ttft[top] == ttft[slowest]  # ties allowed: two requests queued together
        for key, field in (("e", "e2e_s"), ("o", "tpot_s")):
            await pilot.press(key)
            await pilot.pause(0.1)
            values = {a["request_id"]: a[field] for a in finished["attrs"]}
            assert values[table_rows(app, "req-table")[0][0]] == max(values.values()), key
        await pilot.press("n")
        await pilot.pause(0.1)
        newest = finished.loc[finished["end_ns"].idxmax(), "attrs"]["request_id"]
        assert table_rows(app, "req-table")[0][0] == newest
        await pilot.press("t")
        await pilot.pause(0.1)
        await pilot.press("enter")  # the full report of the request under the cursor (the top: following)
        report = await until(pilot, lambda: isinstance(app.screen, RequestDetailScreen) and app.screen.detail
                             and app.screen, what="the request's report")
        assert report.detail["request"]["request_id"] == top
        phases = {p["phase"] for p in report.detail["phases"]}
        assert {"queued", "prefill", "decode"} <= phases and report.detail["steps"] > 0
        text = str(report.query_one("#detail-text").render())
        # replay explains, as live: the same verdicts and the evidence on the request's path, nothing else
        assert all(v["cause"] in text and v["runbook"] in text for v in report.detail["verdicts"])
        assert "budget" in report.detail
        assert f"Host events on its path: {len(report.detail['overlapping'])}" in text
        await pilot.press("escape")
        assert not isinstance(app.screen, RequestDetailScreen)
        summary = str(app.screen.query_one("#req-summary").render())  # the pane under the list: its budget
        assert summary.startswith(f"budget {fmt.dur_ns(report.detail['budget']['actual_ms'] * 1e6)}"), summary


async def test_cursor_keys_and_playback():
    app = _app()
    async with app.run_test(size=(80, 24)) as pilot:
        src = app.source
        await until(pilot, lambda: app.frames >= 1, what="a first frame")
        end, start = src.end_ns, src.start_ns
        steps = [("left_square_bracket", end - S), ("left_curly_bracket", end - 11 * S),
                 ("right_square_bracket", end - 10 * S), ("right_curly_bracket", end),
                 ("less_than_sign", start), ("greater_than_sign", end)]
        for key, expected in steps:
            await pilot.press(key)
            await until(pilot, lambda: app.last_frame.t_ns == expected, what=f"cursor after {key}")
        await pilot.press("less_than_sign", "space")
        await until(pilot, lambda: app.last_frame.t_ns > start + S, what="playback moving the cursor")
        assert "REPLAY ▶" in app.screen.query_one("TitleBar").plain
        await pilot.press("space")
        await pilot.pause(0.7)
        stopped = app.last_frame.t_ns
        await pilot.pause(1.0)
        assert app.last_frame.t_ns == stopped


async def test_events_screen_filter_on_the_recording(recorded):
    app = _app("events")
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: table_rows(app, "events-table"), what="recorded events")
        app.screen.query_one("#filter").focus()
        await pilot.press(*"kind:runq_delay")
        await pilot.pause(0.3)
        n = int((recorded["kind"] == "runq_delay").sum())
        host = int((recorded["source"] != "spans").sum())  # engine spans live on the Requests screen
        assert f"{n} of {host} recent events" in panel_text(app, "events-title")
        assert all(r[1] == "runq_delay" for r in table_rows(app, "events-table"))


async def test_every_screen_and_help_on_the_recording():
    app = _app()
    async with app.run_test(size=(80, 24)) as pilot:
        for i, screen in enumerate(SCREENS, 1):
            await pilot.press(str(i))
            await until(pilot, lambda: app.screen.frame is not None, what=f"a frame on {screen.KEY}")
        await pilot.press("3")
        await until(pilot, lambda: "no gpu records" in panel_text(app, "gpu-cards"), what="the GPU screen's reason")
        await pilot.press("4")
        await until(pilot, lambda: "no net records" in panel_text(app, "net-title"), what="the network reason")
        await pilot.press("5")
        await until(pilot, lambda: "averages, no percentiles" in panel_text(app, "sys-title"), what="syscalls note")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert "Back 1 s" in str(app.screen.query_one("#help-text").render())
        await pilot.press("escape", "q")
    assert app.return_code == 0
