"""Replay counts what the recording holds: a busy minute (300 finished requests among 12,000 slow-syscall events,
so any tail of a few thousand events would hold a fraction of them) must read 300 requests and 5 req/s, the
recording's own count from its parquet."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from gpusleuth.agent.recording.replay import Replay
from gpusleuth.probes.records import Event
from gpusleuth.tui import views
from gpusleuth.tui.app import SleuthApp
from gpusleuth.tui.screens.overview import OverviewScreen
from gpusleuth.tui.source_recording import RecordingSource
from tests.recording_helpers import write_recording
from tests.tui_helpers import panel_text, until

pytestmark = pytest.mark.anyio
S = 1_000_000_000
T0 = 5_000 * S
NUM_REQUESTS, NUM_SYSCALLS = 300, 12_000


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


def _request(i: int) -> list[Event]:
    start = T0 + i * S // 5  # 5 a second for 60 s
    a = {"request_id": f"req-{i:04d}", "rank": 0}
    return [Event("request.queued", "spans", start, start + 2_000_000, 4242, 4243, "gs-engine", {**a, "tokens": 32}),
            Event("request.prefill", "spans", start + 2_000_000, start + 30_000_000, 4242, 4243, "gs-engine", a),
            Event("request.finished", "spans", start + 400_000_000, start + 400_000_000, 4242, 4243, "gs-engine",
                  {**a, "ttft_s": 0.03 + (i % 7) / 1000, "tpot_s": 0.01, "e2e_s": 0.4, "tokens": 16,
                   "status": "stop"})]


@pytest.fixture(scope="module")
def busy(tmp_path_factory):
    events = [e for i in range(NUM_REQUESTS) for e in _request(i)]
    events += [Event("slow_syscall", "syscalls", T0 + k * 5_000_000, T0 + k * 5_000_000 + 11_000_000, 4242, 4250,
                     "gs-step", {"syscall": "epoll_wait", "nr": 232}) for k in range(NUM_SYSCALLS)]
    root = write_recording(tmp_path_factory.mktemp("busy"), events)
    recorded = pd.read_parquet(root / "events")
    finished = recorded[recorded["kind"] == "request.finished"]
    assert len(finished) == NUM_REQUESTS and len(recorded) > 10_000  # what the recording itself holds
    return root, finished


def test_frame_holds_every_recorded_request_of_the_window(busy):
    root, finished = busy
    source = RecordingSource(Replay(root))
    source.seek_edge(True)
    frame = source.fetch(OverviewScreen.WANT)
    done = [r for r in frame.requests if r["end_ns"] is not None]
    assert {r["request_id"] for r in done} == {json.loads(a)["request_id"] for a in finished["attrs"]}
    stats = views.engine_stats(frame)
    # the cursor is at the last request's end: every request of the minute is in the last 60 s (or ends at its edge)
    in_window = int((finished["end_ns"] >= frame.t_ns - 60 * S).sum())
    assert stats["n"] == in_window and stats["rps"] == pytest.approx(in_window / 60)
    assert in_window >= NUM_REQUESTS - 3


async def test_overview_and_requests_screens_read_the_recorded_count(busy):
    root, finished = busy
    app = SleuthApp(RecordingSource(Replay(root)))
    async with app.run_test(size=(80, 24)) as pilot:
        engine = await until(pilot, lambda: panel_text(app, "ov-engine"), what="the engine panel")
        n = int((finished["end_ns"] >= app.last_frame.t_ns - 60 * S).sum())
        assert f"({'last 60 s'}, {n} req)" in engine, engine
        await pilot.press("2")
        title = await until(pilot, lambda: str(app.screen.query_one("#req-title").render()), what="the list")
        assert title.startswith(f"{NUM_REQUESTS} requests"), title
