"""A real 80x24 terminal (tmux) on `agent tui --recording`: a recorded fault-suite window (the tiny engine beside a
SCHED_FIFO CPU hog, tests/fixtures/diagnosis/cpu_hog_fifo) made into a recording. By keys only (`2`, `e`, enter),
the slowest request's full verdict (cause, culprit, evidence) and its runbook path must be on screen, checked
against the replay's own `explain` of that request."""
from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from gpusleuth.agent.harness import AGENT
from gpusleuth.agent.recording.replay import Replay
from tests.recording_helpers import fault_recording

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is not installed: agent/install.sh installs it (apt-get install tmux)")


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


def _wait_screen(name: str, predicate, timeout: float = 60.0, what: str = "screen") -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = _tmux("capture-pane", "-p", "-t", name)
        if predicate(screen):
            return screen
        time.sleep(0.2)
    raise AssertionError(f"{what} not on screen within {timeout} s; last screen:\n{screen}")


def _flat(text: str) -> str:
    """Words of the screen in order (lines joined: wrapped text reads as one)."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    root, truth = fault_recording(tmp_path_factory.mktemp("rec"), "cpu_hog_fifo")
    replay = Replay(root)
    rows = [r for r in replay.requests(replay.start_ns - 1, replay.end_ns) if r.get("e2e_s") is not None]
    slowest = max(rows, key=lambda r: r["e2e_s"])
    report = replay.explain(slowest)
    assert report["verdicts"] and report["verdicts"][0]["cause"] == truth["cause"]  # the data has a verdict to read
    return {"root": root, "slowest": slowest, "report": report, "n": len(rows)}


def test_80x24_slowest_request_full_verdict_and_runbook_path_by_keys(recording):
    name = f"gpusleuth-tui19-{os.getpid()}"
    command = f"{AGENT} tui --recording {recording['root']}; echo EXIT=$?; sleep 30"
    _tmux("new-session", "-d", "-s", name, "-x", "80", "-y", "24", "sh", "-c", command)
    top = recording["report"]["verdicts"][0]
    rid = recording["slowest"]["request_id"]
    try:
        _wait_screen(name, lambda s: "REPLAY" in s and "Incidents" in s, what="the overview")
        _tmux("send-keys", "-t", name, "2")
        _wait_screen(name, lambda s: "requests by newest" in s, what="the Requests screen")
        _tmux("send-keys", "-t", name, "e")
        screen = _wait_screen(name, lambda s: "requests by e2e" in s and top["runbook"] in s, what="the top verdict")
        rows = [ln for ln in screen.splitlines() if ln.startswith(" cmpl-")]
        assert len(rows) >= min(8, recording["n"]), screen  # the list keeps at least 8 rows at 80x24
        assert rows[0].split()[0] in (rid, rid[:19] + "…")  # the slowest first, under the (following) cursor
        flat = _flat(screen)
        assert f"1. {top['cause']}" in flat and _flat(top["evidence"]) in flat, screen  # the why, not cut
        assert any(ln.strip() in (top["runbook"], f"runbook: {top['runbook']}") for ln in screen.splitlines()), screen
        _tmux("send-keys", "-t", name, "Enter")  # the full report
        screen = _wait_screen(name, lambda s: "Request report" in s and top["runbook"] in s, what="the report")
        flat = _flat(screen)
        assert rid in flat and f"culprit: {top['culprit']['comm']} (pid {top['culprit']['pid']}" in flat, screen
        assert _flat(top["evidence"]) in flat and top["runbook"] in screen, screen
        _tmux("send-keys", "-t", name, "Escape")
        _wait_screen(name, lambda s: "Request report" not in s and "requests by e2e" in s, what="back on the list")
        _tmux("send-keys", "-t", name, "q")
        _wait_screen(name, lambda s: "EXIT=0" in s, what="a clean exit")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)
