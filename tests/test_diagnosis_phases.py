"""agent/diagnosis: a request's own spans, its engine's steps and the host evidence, split from one window."""
from __future__ import annotations

from gpusleuth.agent.diagnosis.explain import explain
from gpusleuth.agent.diagnosis.phases import split_window
from gpusleuth.probes.records import Event

MS = 1_000_000


def _ev(kind: str, start: int, end: int, pid: int = 7, **attrs) -> Event:
    return Event(kind, "test", start, end, pid=pid, tid=pid, attrs=attrs)


def test_split_keeps_own_spans_steps_of_its_engine_and_host_events():
    req = {"request_id": "r1", "pid": 7}
    window = split_window(req, [
        _ev("request.decode", 9, 20, request_id="r1"),
        _ev("request.prefill", 5, 9, request_id="r1"),
        _ev("request.prefill", 5, 9, request_id="r2"),  # another request of the same engine
        _ev("request.prefill", 5, 9, pid=8, request_id="r1"),  # the same id from another engine
        _ev("request.finished", 20, 20, request_id="r1"),
        _ev("engine.step", 6, 7),
        _ev("engine.step", 6, 7, pid=8),
        _ev("slow_syscall", 6, 8, syscall="fsync"),
        _ev("slow_syscall", 0, 30, syscall="epoll_wait"),
    ])
    assert [e.kind for e in window.phases] == ["request.prefill", "request.decode"]
    assert [e.pid for e in window.steps] == [7]
    assert [e.attrs["syscall"] for e in window.evidence] == ["fsync"] and window.idle_waits == 1


def test_explain_blames_the_stall_not_the_idle_wait():
    req = {"request_id": "r1", "pid": 7, "start_ns": 0, "end_ns": 100 * MS}
    report = explain(req, [
        _ev("request.queued", 0, 1 * MS, request_id="r1"),
        _ev("request.prefill", 1 * MS, 90 * MS, request_id="r1"),
        _ev("request.decode", 90 * MS, 100 * MS, request_id="r1"),
        _ev("slow_syscall", 10 * MS, 70 * MS, syscall="fsync"),
        _ev("slow_syscall", 0, 100 * MS, syscall="futex"),
    ])
    top = report["verdicts"][0]
    assert top["cause"] == "syscall" and "fsync" in top["evidence"] and "futex" not in top["evidence"]
    assert 0.6 < top["score"] < 0.7  # 60 ms of the 89 ms prefill
    assert report["idle_waits_hidden"] == 1 and [e["kind"] for e in report["overlapping"]] == ["slow_syscall"]
