"""`agent demo --no-tui`'s live line and closing report (agent/cli/demo_report.py) over a fake control client that
answers as the agent does: requests counted from the span intake's finished_total (not the `requests` limit), TTFT
percentiles of the requests since the demo began, incidents, and the three slowest explained."""
from __future__ import annotations

import json

from gpusleuth.agent.cli import demo_report
from gpusleuth.agent.cli.demo_report import DemoWatch, bar
from gpusleuth.agent.cli.loadgen import LoadStats

START = 10_000_000_000


class FakeAgent:
    def __init__(self) -> None:
        self.finished_total = 40  # before the demo began
        self.rows = [{"request_id": f"r{i}", "end_ns": START + (i - 5) * 10**9, "ttft_s": 0.01 * (i + 1)}
                     for i in range(300)]  # five from before the demo
        self.incidents = [{"cause": "cpu_contention", "is_open": True, "culprit": {"comm": "hog", "pid": 7},
                           "runbook": "/x/runbooks/cpu-contention.md"}]
        self.explained: list[str] = []

    def call(self, method: str, **params):
        if method == "snapshot":
            return {"spans": {"finished_total": self.finished_total}}
        if method == "requests":
            return self.rows[-params.get("limit", 200):]
        if method == "incidents":
            return self.incidents
        if method == "status":
            return {"pid": 1, "uptime_s": 5.0, "config_source": "/tmp/agent.toml", "probes": {},
                    "store": {"samples": 0, "events": 0, "approx_bytes": 0, "samples_dropped": 0,
                              "events_dropped": 0}}
        if method == "diagnoses":
            assert params["since_ns"] == START
            return [{"request_id": f"r{i}"} for i in (299, 150, 7)][:params["slowest"]]
        if method == "explain":
            self.explained.append(params["request_id"])
            return {"request": {"request_id": params["request_id"], "pid": 9}, "verdicts": [],
                    "budget": {"actual_ms": 10.0, "expected_ms": 5.0, "excess_ms": 5.0, "parts": []}}
        raise AssertionError(method)


def test_bar_fills_with_the_elapsed_share():
    assert bar(15, 60) == "[█████░░░░░░░░░░░░░░░]   15/60 s"
    assert bar(90, 60).startswith("[" + "█" * 20 + "]")


def test_live_line_counts_what_the_agent_finished_since_the_start():
    agent = FakeAgent()
    watch = DemoWatch(agent, START)
    agent.finished_total += 295  # 295 finished during the demo, more than `requests`' default limit of 200
    line = watch.line(30, 60, LoadStats(sent=301, ok=295))
    ttft = sorted(0.01 * (i + 1) for i in range(5, 300))
    assert "done 295 (sent 301)" in line and "15/60" not in line and "30/60 s" in line
    assert f"p50 {ttft[147] * 1e3:.0f}ms" in line and f"p99 {ttft[292] * 1e3:.0f}ms" in line
    assert "incidents 1 (open: cpu_contention)" in line


def test_final_report_explains_the_three_slowest(monkeypatch):
    monkeypatch.setattr(demo_report, "format_status", lambda st: f"agent pid {st['pid']}")  # tested in its own file
    agent = FakeAgent()
    watch = DemoWatch(agent, START)
    agent.finished_total += 246
    text, code = watch.final(LoadStats(sent=246, ok=246))
    assert code == 0 and agent.explained == ["r299", "r150", "r7"] and "agent pid 1" in text
    assert "the agent saw 246 finished requests" in text and "the 3 slowest requests" in text
    assert "incident cpu_contention (open): culprit hog (pid 7) -> /x/runbooks/cpu-contention.md" in text
    summary = json.loads(text.splitlines()[-1])
    assert summary["requests_finished"] == 246 and summary["slowest"] == ["r299", "r150", "r7"]
