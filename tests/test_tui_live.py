"""`agent tui` against a real agent started by the test (syscalls, sched, gpu, spans probes; real eBPF, root):
Pilot tests of every screen and key, the exit codes of `agent tui`, and a real 80x24 terminal in tmux."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from gpusleuth.agent.control.client import ControlClient
from gpusleuth.agent.harness import AGENT, run_agent, wait_for, write_config
from gpusleuth.probes.records import monotonic_ns
from gpusleuth.probes.spans.synthetic import request_spans, send_spans
from gpusleuth.tui.app import SCREENS, SleuthApp
from gpusleuth.tui.idle import is_idle_event
from gpusleuth.tui.screens.help import HelpScreen
from gpusleuth.tui.screens.request_detail import RequestDetailScreen
from gpusleuth.tui.source_live import LiveSource
from tests.agent_helpers import spawn_python
from tests.tui_helpers import panel_text, table_rows, until

pytestmark = [pytest.mark.root, pytest.mark.anyio]

# Blocks in read() on a pipe a thread feeds every 25 ms: about 40 reads and 40 clock_nanosleeps a second, each
# ~25 ms. The reads are slow syscalls the agent's explain lists (its sleeps are idle waits, which explain hides).
SLEEPER = """
import os, sys, threading, time
r, w = os.pipe()
def feed():
    while True:
        time.sleep(0.025)
        os.write(w, b"x")
sys.stdin.readline()
threading.Thread(target=feed, daemon=True).start()
while True:
    os.read(r, 1)
"""
# (request id, queue s, prefill s, decode s): "req-slow" has the longest TTFT, "req-long" the longest e2e and TPOT
REQUESTS = [("req-a", 0.01, 0.05, 0.30), ("req-b", 0.02, 0.04, 0.20), ("req-slow", 0.60, 0.10, 0.31),
            ("req-long", 0.01, 0.05, 1.20), ("req-c", 0.03, 0.06, 0.25)]


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def live():
    tmp = Path(tempfile.mkdtemp(prefix="gpusleuth-tui-"))
    os.chmod(tmp, 0o755)  # an unprivileged user can reach the socket file (and is refused by its mode)
    spans = tmp / "spans.sock"
    cfg = write_config(tmp, ["syscalls", "sched", "gpu", "spans"], extra=f'[probes.spans]\nsocket = "{spans}"\n')
    started = run_agent("--config", str(cfg), "start")
    assert started.returncode == 0, started.stderr
    sleeper = spawn_python(SLEEPER)
    try:
        with ControlClient(str(tmp / "agent.sock")) as client:
            client.call("watch", pids=[sleeper.pid])
            time.sleep(1.0)  # the next watch rescan pushes the pid into the kernel maps
            sleeper.stdin.write("go\n")
            sleeper.stdin.flush()
            first = wait_for(lambda: client.call("events", kinds=["slow_syscall"], pid=sleeper.pid, limit=1000),
                             timeout=20)[0]["start_ns"]
            # the request windows (the last 1.6 s) must lie where the sleeper was already being traced
            wait_for(lambda: monotonic_ns() - first > 2e9, timeout=5)
            end = monotonic_ns()
            send_spans(str(spans), [s for i, (rid, q, p, d) in enumerate(REQUESTS)
                                    for s in request_spans(rid, end - int(1.6e9) + i * 10_000_000, q, p, d)])
            wait_for(lambda: len(client.call("requests")) == len(REQUESTS), timeout=10)
        yield {"tmp": tmp, "config": cfg, "socket": str(tmp / "agent.sock"), "pid": sleeper.pid}
    finally:
        sleeper.kill()
        run_agent("--config", str(cfg), "stop")
        shutil.rmtree(tmp, ignore_errors=True)


def _app(live, screen: str = "overview") -> SleuthApp:
    return SleuthApp(LiveSource(live["socket"]), start_screen=screen)


async def test_overview_shows_the_watched_process_and_missing_probes(live):
    app = _app(live)
    async with app.run_test(size=(80, 24)) as pilot:
        text = await until(pilot, lambda: f"({live['pid']})" in panel_text(app, "ov-syscalls")
                           and panel_text(app, "ov-syscalls"), what="the sleeper in the syscall panel")
        assert "read" in text and "clock_n" not in text  # the overview leaves idle waits (sleeps) out
        assert f"({live['pid']})" in await until(pilot, lambda: panel_text(app, "ov-runq"), what="run-queue rows")
        gpu = panel_text(app, "ov-gpu")
        assert gpu.startswith("no data: gpu probe unavailable:") or gpu.startswith("0 "), gpu
        assert "the net probe is not enabled" in panel_text(app, "ov-net")
        engine = panel_text(app, "ov-engine")
        assert f"{len(REQUESTS)} req" in engine
        status = app.screen.query_one("StatusLine").plain
        assert "● syscalls" in status and "● sched" in status and "● spans" in status


async def test_requests_sort_and_detail_with_overlapping_host_events(live):
    app = _app(live, "requests")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: len(table_rows(app, "req-table")) == len(REQUESTS), what="all requests listed")
        by = lambda f: max(enumerate(REQUESTS), key=lambda ir: f(ir[0], *ir[1][1:]))[1][0]
        expected = {"t": by(lambda i, q, p, d: q + p), "e": by(lambda i, q, p, d: q + p + d),
                    "o": by(lambda i, q, p, d: d), "n": by(lambda i, q, p, d: i * 0.01 + q + p + d)}
        assert expected["t"] == "req-slow" and expected["e"] == "req-long"  # the data tells the keys apart
        for key, first in expected.items():
            await pilot.press(key)
            await pilot.pause(0.1)
            assert table_rows(app, "req-table")[0][0] == first, key
        await pilot.press("home", "t")  # the cursor follows the top: the detail follows it onto req-slow
        screen = app.screen
        await until(pilot, lambda: screen.detail and screen.detail["request"]["request_id"] == "req-slow",
                    what="the slow request's detail")
        assert str(screen.query_one("#req-summary").render()).startswith("budget ")
        await pilot.press("enter")  # the report: phases and the host events on the request's path
        report = await until(pilot, lambda: isinstance(app.screen, RequestDetailScreen) and app.screen.detail
                             and app.screen, what="the report")
        text = str(report.query_one("#detail-text").render())
        assert "queued" in text and "prefill" in text and "decode" in text
        # the sleeper's 25 ms reads overlap every request window: the agent's explain must bring them
        assert any(ln.split()[1:2] == ["slow_syscall"] and f"({live['pid']})" in ln and " read took " in ln
                   for ln in text.splitlines()), text[-2000:]


async def test_syscalls_screen_numbers_sort_and_filter(live):
    app = _app(live, "syscalls")
    async with app.run_test(size=(100, 30)) as pilot:
        def sleeper_row():
            return next((r for r in table_rows(app, "sys-table")
                         if r[0] == str(live["pid"]) and r[2] == "clock_nanosleep"), None)

        await until(pilot, lambda: app.last_frame and "window.syscalls" not in app.last_frame.notes
                    and table_rows(app, "sys-table"), timeout=20, what="a full 10 s window")
        assert sleeper_row() is None  # its sleeps are idle waits: hidden until `i`
        await pilot.press("i")
        row = await until(pilot, sleeper_row, timeout=20, what="the sleeper's sleeps, shown")
        per_s = int(row[4])
        assert 15 <= per_s <= 41, row  # 25 ms sleeps: at most 40 a second, fewer on a loaded box
        await pilot.press("s")
        assert "by calls" in panel_text(app, "sys-title")
        counts = [int(r[3]) for r in table_rows(app, "sys-table")]
        assert counts == sorted(counts, reverse=True)
        await pilot.press("slash", *"nanosleep")
        await pilot.pause(0.2)
        rows = table_rows(app, "sys-table")
        assert rows and all("nanosleep" in r[2] for r in rows)
        await pilot.press("escape")
        await pilot.pause(0.2)
        assert app.screen.filter_text == "" and not app.screen.query_one("#filter").display  # cleared, hidden
        assert len(table_rows(app, "sys-table")) > len(rows)  # every syscall is back


async def test_events_screen_filter_matches_the_agent(live):
    app = _app(live, "events")
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: len(table_rows(app, "events-table")) > 3, what="events listed")
        app.screen.query_one("#filter").focus()
        await pilot.press(*f"kind:slow_syscall pid:{live['pid']}")
        await pilot.pause(0.3)
        rows = table_rows(app, "events-table")
        assert rows and all(r[1] == "slow_syscall" and f"({live['pid']})" in r[2] for r in rows)
        shown = app.last_frame.events
        n = sum(1 for e in shown if e["kind"] == "slow_syscall" and e["pid"] == live["pid"] and not is_idle_event(e))
        assert f"{n} of {len(shown)} recent events" in panel_text(app, "events-title") or len(rows) == min(n, 500)


async def test_quit_with_q(live):
    app = _app(live)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.frames >= 1, what="a first frame")
        await pilot.press("q")
        await pilot.pause(0.2)
    assert app.return_code == 0 and not app.is_running


async def test_navigation_help_pause_refresh_and_quit(live):
    app = _app(live)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.frames >= 1, what="a first frame")
        keys = [s.KEY for s in SCREENS]
        for expected in keys[1:] + keys[:1]:
            await pilot.press("tab")
            assert app.current_mode == expected
        await pilot.press("shift+tab")
        assert app.current_mode == keys[-1]
        for i, key in enumerate(keys, 1):
            await pilot.press(str(i))
            assert app.current_mode == key
            # every screen draws a frame from the live agent (its WANT may differ from the last screen's)
            await until(pilot, lambda: app.screen.frame is not None, what=f"a frame on {key}")
        await pilot.press("3")
        cards = await until(pilot, lambda: panel_text(app, "gpu-cards"), what="the GPU screen")
        assert cards.startswith("no data: gpu probe unavailable:") or cards.startswith("0 "), cards
        await pilot.press("4")
        assert "the net probe is not enabled" in await until(pilot, lambda: panel_text(app, "net-title"),
                                                             what="the network screen")
        await pilot.press("1", "question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("slash")  # the overview has no filter: it says so instead of failing
        await pilot.press("p")
        assert "PAUSED" in app.screen.query_one("TitleBar").plain
        await pilot.pause(1.0)  # a fetch already under way (or asked for by a screen switch) may still land
        paused_at = app.frames
        await pilot.pause(1.2)
        assert app.frames == paused_at  # no refresh while paused
        await pilot.press("r")
        await until(pilot, lambda: app.frames == paused_at + 1, what="one refresh on r")
        await pilot.press("p")
        await until(pilot, lambda: app.frames >= paused_at + 3, what="refreshes resume")
        await pilot.press("ctrl+q")
        await pilot.pause(0.2)
    assert app.return_code == 0


def test_cli_exit_codes(live, tmp_path):
    gone = run_agent("tui", "--socket", str(tmp_path / "none.sock"))
    assert gone.returncode == 3 and "no agent is running" in gone.stderr
    denied = run_agent("tui", "--socket", live["socket"], user="nobody")
    assert denied.returncode == 4 and "permission denied" in denied.stderr
    assert run_agent("tui", "--recording", str(tmp_path)).returncode == 2
    bad = run_agent("tui", "--socket", live["socket"], "--refresh", "0")
    assert bad.returncode == 2 and "--refresh" in bad.stderr


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")
def test_tmux_80x24_panels_keys_and_clean_exit(live):
    name = f"gpusleuth-tui-{os.getpid()}"
    # the shell outlives the TUI, so the terminal state it left behind can be read afterwards
    command = f"{AGENT} tui --config {live['config']}; echo EXIT=$?; sleep 60"
    _tmux("new-session", "-d", "-s", name, "-x", "80", "-y", "24", "sh", "-c", command)
    try:
        shell = int(_tmux("display-message", "-p", "-t", name, "#{pane_pid}").strip())
        (tui,) = wait_for(lambda: _children(shell), timeout=10)
        screen = wait_for(lambda: (s := _tmux("capture-pane", "-p", "-t", name)) and "Syscalls" in s
                          and f"({live['pid']})" in s and s, timeout=30)
        assert "GPUs" in screen and "Engine" in screen and "Network" in screen and "Run queue" in screen
        assert ("gpu probe unavailable" in screen) or ("util" in screen), screen
        assert _tmux("display-message", "-p", "-t", name, "#{alternate_on} #{mouse_any_flag}").split() == ["1", "1"]
        _tmux("send-keys", "-t", name, "5")
        wait_for(lambda: "by p99 latency" in _tmux("capture-pane", "-p", "-t", name), timeout=10)
        _tmux("send-keys", "-t", name, "i")  # the sleeper's clock_nanosleeps are idle waits
        wait_for(lambda: "clock_nanosleep" in _tmux("capture-pane", "-p", "-t", name), timeout=10)
        _tmux("send-keys", "-t", name, "?")
        wait_for(lambda: "Help (esc closes)" in _tmux("capture-pane", "-p", "-t", name), timeout=10)
        _tmux("send-keys", "-t", name, "Escape")  # alone: ESC followed at once by q would read as alt+q
        wait_for(lambda: "Help (esc closes)" not in _tmux("capture-pane", "-p", "-t", name), timeout=10)
        _tmux("send-keys", "-t", name, "q")
        wait_for(lambda: "EXIT=0" in _tmux("capture-pane", "-p", "-t", name), timeout=10)
        state = _tmux("display-message", "-p", "-t", name, "#{alternate_on} #{mouse_any_flag} #{cursor_flag}")
        assert state.split() == ["0", "0", "1"], state  # main screen back, mouse reporting off, cursor shown
        with pytest.raises(ProcessLookupError):
            os.kill(tui, 0)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)
