"""Each detector on a recorded fault-suite window (tests/fixtures/diagnosis/, made by
tests/fixtures/diagnosis_make_fixtures.py on this CPU box: a real agent, the bundled engine, real faults). The
recorded events are diagnosed again here with today's code; the floors are what it achieves on them, so a detector
that stops seeing its evidence fails its row."""
from __future__ import annotations

import functools

import pytest

from tests.diagnosis_helpers import fixture, monitor

# scenario -> (cause, share of the slow requests in the window whose top verdict must be it, culprit must match)
ROWS = {
    "cpu_hog_fifo": ("cpu_contention", 0.95, "pid"),
    "sigstop": ("process_frozen", 0.9, "pid"),
    "cgroup_freeze": ("process_frozen", 0.75, "cgroup"),
    "cpu_quota": ("cgroup_throttling", 0.9, "cgroup"),
    "scheduler_sleep": ("engine_stall", 0.95, "pid"),
    "fsync_drill": ("blocking_io", 0.9, "pid"),
    "memory_squeeze": ("memory_reclaim", 0.9, "pid"),
    "gc_pause": ("gc_pause", 0.95, "pid"),
    "gil_contention": ("gil_contention", 0.9, "pid"),
    "burst": ("queueing", 0.75, "request_ids"),
}


@functools.cache
def _window(name: str) -> tuple[dict, list[dict]]:
    """The fixture's truth and the explain reports of its slow requests that overlapped the fault."""
    d = fixture(name)
    m = monitor(d["events"], d["samples"])
    reports = [m.explain(r["request_id"]) for r in m.recent
               if r["end_ns"] >= d["onset_ns"] and r["start_ns"] <= d["end_ns"]]
    return d, [r for r in reports if r["budget"]["is_slow"]]


def _culprit_ok(v: dict, how: str, truth: dict) -> bool:
    c = v["culprit"]
    if how == "pid":
        return c.get("pid") in truth["pids"]
    if how == "cgroup":
        return c.get("pid") in truth["pids"] and c.get("cgroup") == truth["cgroup"]
    return bool(c.get("request_ids"))


@pytest.mark.parametrize("name", sorted(ROWS))
def test_recorded_fault_is_named_with_its_culprit(name):
    cause, floor, how = ROWS[name]
    truth, slow = _window(name)
    assert len(slow) >= 8, f"{name}: the recording has only {len(slow)} slow requests"
    top = [r["verdicts"][0] for r in slow if r["verdicts"]]
    hits = [v for v in top if v["cause"] == cause]
    assert len(hits) >= floor * len(slow), (name, [v["cause"] for v in top])
    assert all(_culprit_ok(v, how, truth["culprit"]) for v in hits), hits[0]["culprit"]
    assert all(v["runbook"].endswith(cause.replace("_", "-") + ".md") for v in hits)
    # the verdict says how much of the excess it explains, and the budget what stays unexplained
    for r in slow:
        explained = sum(v["explained_ms"] for v in r["verdicts"])
        assert abs(explained + r["unexplained_ms"] - r["budget"]["excess_ms"]) < 0.01 * r["budget"]["excess_ms"] + 0.01


def test_recorded_clean_window_raises_no_likely_verdict():
    d = fixture("clean")
    m = monitor(d["events"], d["samples"])
    reports = [m.explain(r["request_id"]) for r in m.recent
               if r["end_ns"] >= d["onset_ns"] and r["start_ns"] <= d["end_ns"]]
    assert len(reports) >= 20
    likely = [r for r in reports if r["verdicts"] and r["verdicts"][0]["is_likely"]]
    assert len(likely) <= 0.02 * len(reports), [r["verdicts"][0]["evidence"] for r in likely]


def test_recorded_softirq_is_found_on_the_engine_cpu_and_names_the_flood():
    truth, slow = _window("softirq")
    found = [v for r in slow for v in r["verdicts"] if v["cause"] == "softirq"]
    assert len(found) >= 0.5 * len(slow)
    assert all(v["culprit"]["pid"] in truth["culprit"]["pids"] and v["culprit"]["cpu"] == truth["culprit"]["cpu"]
               for v in found), found[0]


def test_a_stop_before_arrival_is_the_requests_backlog():
    truth, slow = _window("sigstop")
    frozen = [r for r in slow if r["verdicts"] and r["verdicts"][0]["cause"] == "process_frozen"]
    parts = {p["part"]: p for p in frozen[0]["budget"]["parts"]}
    assert parts["backlog"]["baseline"] == "inferred" and parts["backlog"]["actual_ms"] > 100
    assert frozen[0]["verdicts"][0]["parts"].get("backlog", 0) > 100
