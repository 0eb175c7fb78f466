"""The TUI's data layer without a terminal: sparklines, windowed histograms, rankings, recording replay."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from gpusleuth.probes.bpf.log2_hist import Log2Counts, quantile_from_buckets
from gpusleuth.probes.kernel.snapshot import SchedSnapshot, SyscallProcess, SyscallSnapshot
from gpusleuth.probes.net.snapshot import DirectionTotals, InterfaceState, NetSnapshot
from gpusleuth.tui import fmt, views
from gpusleuth.tui.history import FrameHistory, hist_delta
from gpusleuth.tui.source import Frame, Want
from gpusleuth.tui.source_live import EventBuffer
from gpusleuth.tui.source_recording import RecordingSource
from gpusleuth.agent.recording.replay import RecordingError, Replay

FIXTURE = Path(__file__).parent / "fixtures" / "tui_recording"
S = 1_000_000_000


def test_spark_places_points_by_time_and_leaves_gaps():
    # 4 columns over 4 s ending at t=4 s: points in columns 0 and 3 only, column 3 averages 50 and 100
    points = [(int(0.5 * S), 0.0), (int(3.2 * S), 50.0), (int(3.9 * S), 100.0)]
    line = fmt.spark(points, 4 * S, 4 * S, 4, 0, 100)
    assert line[1:3] == "  "  # no data: a gap, not a zero
    assert line[0] == fmt.BLOCKS[1] and line[3] == fmt.BLOCKS[round(0.75 * 7) + 1]
    assert fmt.spark([], 4 * S, 4 * S, 4) == "    "


def test_hist_delta_subtracts_and_detects_counter_reset():
    ref = Log2Counts(count=10, sum_ns=1000, buckets={3: 6, 5: 4})
    now = Log2Counts(count=15, sum_ns=1900, buckets={3: 6, 5: 7, 9: 2})
    assert hist_delta(now, ref) == {"count": 5, "sum_ns": 900, "buckets": {5: 3, 9: 2}}
    assert hist_delta(ref, ref) is None
    restarted = Log2Counts(count=2, sum_ns=50, buckets={1: 2})  # fewer than before: the counters began again
    assert hist_delta(restarted, ref) == {"count": 2, "sum_ns": 50, "buckets": {1: 2}}


def _sys_snap(t_s: float, count: int, slow: int) -> SyscallSnapshot:
    buckets = {12: count - slow, **({25: slow} if slow else {})}
    return SyscallSnapshot(t_ns=int(t_s * S), processes={42: SyscallProcess("w", {
        "read": Log2Counts(count=count, sum_ns=count * 1000 + slow * 20_000_000, buckets=buckets)})})


def test_history_windows_use_a_reference_window_seconds_old():
    h = FrameHistory(window_s=10)
    rows, full = h.window("syscalls", _sys_snap(0, 100, 0))
    assert not full and rows[0]["count"] == 100  # first snapshot: totals since start
    for t in range(1, 12):
        rows, full = h.window("syscalls", _sys_snap(t, 100 + 50 * t, t // 6))
    assert full
    (row,) = rows
    # reference is the snapshot at t=1 (the newest at or before 11 - 10): 650 - 150 calls, one 2^25 ns call
    assert row["count"] == 500 and row["buckets"] == {12: 499, 25: 1}
    ranked = views.with_quantiles(row)
    assert ranked["p99_ns"] == quantile_from_buckets({12: 499, 25: 1}, 0.99)


def test_net_rates_from_cumulative_bytes():
    h = FrameHistory()
    snap = lambda t, b: NetSnapshot(t_ns=int(t * S), interfaces={"eth0": InterfaceState(directions={  # noqa: E731
        "egress": DirectionTotals(bytes=b)})})
    h.update_net(snap(1.0, 1000))
    h.update_net(snap(1.5, 1000 + 125_000))  # 125 kB in 0.5 s = 2 Mb/s
    assert h.series["net.eth0.egress_bps"][-1] == (int(1.5 * S), pytest.approx(2e6))


def test_top_latency_ranks_by_p99_not_average():
    many_fast_one_slow = {"pid": 1, "comm": "a", "syscall": "futex", "count": 1000, "sum_ns": 1000 * 800,
                          "buckets": {10: 985, 24: 15}}
    uniformly_medium = {"pid": 2, "comm": "b", "syscall": "read", "count": 10, "sum_ns": 10 * 4_000_000,
                        "buckets": {22: 10}}
    ranked = views.top_latency([uniformly_medium, many_fast_one_slow], 2)
    assert [r["pid"] for r in ranked] == [1, 2]
    assert ranked[0]["p99_ns"] > ranked[1]["p99_ns"] and ranked[0]["avg_ns"] < ranked[1]["avg_ns"]
    assert [r["pid"] for r in views.top_latency([uniformly_medium, many_fast_one_slow], 2, "read")] == [2]
    # futex is an idle wait: slow by design, left out where only real stalls should rank
    assert [r["pid"] for r in views.top_latency([uniformly_medium, many_fast_one_slow], 2,
                                                is_waits_hidden=True)] == [2]


def test_missing_reason_names_the_fix():
    frame = Frame(status={"probes": {"gpu": {"state": "unavailable", "reason": "libnvidia-ml.so.1 not found"},
                                     "sched": {"state": "ok"}}})
    assert views.missing_reason(frame, "gpu") == "gpu probe unavailable: libnvidia-ml.so.1 not found"
    assert "add \"net\" to probes.enabled" in views.missing_reason(frame, "net")
    assert "waiting for its first poll" in views.missing_reason(frame, "sched")
    frame.snapshots["sched"] = SchedSnapshot(t_ns=1)
    assert views.missing_reason(frame, "sched") is None


def test_engine_stats_percentiles_over_the_last_minute():
    now = 1000 * S
    reqs = [{"end_ns": now - i * S, "ttft_s": 0.1 * (i + 1), "tpot_s": 0.01} for i in range(50)]
    reqs.append({"end_ns": now - 120 * S, "ttft_s": 99.0})  # outside the window: ignored
    s = views.engine_stats(Frame(t_ns=now, requests=reqs))
    assert s["n"] == 50 and s["rps"] == pytest.approx(50 / 60)
    assert s["ttft_s_p50"] == pytest.approx(2.5) and s["ttft_s_p99"] == pytest.approx(5.0)


def test_event_filter_terms():
    e = {"kind": "slow_syscall", "source": "syscalls", "pid": 42, "comm": "python3", "start_ns": 0,
         "end_ns": 12_000_000, "attrs": {"syscall": "read"}}
    assert views.event_matches(e, "kind:slow pid:42")
    assert not views.event_matches(e, "pid:4")
    assert views.event_matches(e, "read 12.0ms")  # free text matches the summary line
    assert not views.event_matches(e, "source:net")


def test_event_buffer_dedupes_overlapping_fetches_and_leaves_spans_out():
    buf = EventBuffer(maxlen=3)
    e = lambda t, src="syscalls": {"kind": "k", "source": src, "start_ns": t, "end_ns": t, "pid": 1, "tid": 1}
    buf.add([e(1), e(2)])
    buf.add([e(2), e(3), e(4, "spans"), e(5)])  # the overlap re-asks for e(2); a span would evict host events
    assert [x["start_ns"] for x in buf.events] == [2, 3, 5] and [x["seq"] for x in buf.events] == [2, 3, 4]


def test_recording_rebuilds_requests_and_windows_from_the_parquet():
    src = RecordingSource(Replay(FIXTURE))
    ev = pd.read_parquet(FIXTURE / "events")
    finished = ev[ev["kind"] == "request.finished"]
    frame = src.fetch(Want(is_events=True, is_requests=True))
    got = {r["request_id"]: r for r in frame.requests}
    for _, row in finished.iterrows():
        attrs = json.loads(row["attrs"])
        assert got[attrs["request_id"]]["ttft_s"] == pytest.approx(attrs["ttft_s"])
        assert got[attrs["request_id"]]["end_ns"] == row["end_ns"]
    sa = pd.read_parquet(FIXTURE / "samples")
    counts = sa[(sa["series"] == "syscall.count") & (sa["t_ns"] > src.end_ns - 10 * S) & (sa["t_ns"] <= src.end_ns)]
    assert sum(r["count"] for r in frame.windows["syscalls"]) == int(counts["value"].sum()) > 0
    assert frame.status["probes"]["gpu"]["state"] == "absent"


def test_recording_cursor_is_clamped_and_moves_the_window():
    src = RecordingSource(Replay(FIXTURE))
    assert src.cursor_ns == src.end_ns
    src.seek(5)
    assert src.cursor_ns == src.end_ns
    src.seek(-3)
    assert src.cursor_ns == src.end_ns - 3 * S
    src.seek_edge(to_end=False)
    first = src.fetch(Want(is_events=True))
    assert first.t_ns == src.start_ns and all(e["start_ns"] <= src.start_ns for e in first.events)


def test_recording_rejects_a_folder_that_is_not_one(tmp_path):
    with pytest.raises(RecordingError, match="not a gpusleuth recording"):
        Replay(tmp_path)
    (tmp_path / "samples").mkdir()
    with pytest.raises(RecordingError, match="empty"):
        Replay(tmp_path)
