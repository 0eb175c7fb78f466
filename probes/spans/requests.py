"""Assembling engine request spans into per-request traces and latency histograms.

A request is in flight from its first span (an engine's "received", or "queued" from engines that predate it) to
its "finished". In-flight traces are forgotten, and counted by reason, when there are too many (`capacity`), when
one is older than the in-flight timeout (`timeout`) or when its engine exits (`exited`). Spans that arrive for a
request already finished (an abort's last phase, sent by the step thread after the server closed the request) are
counted as late and dropped, so they never open a trace that cannot finish.
"""
from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from gpusleuth.probes.spans.snapshot import LatencyHistogram, RequestRow
from gpusleuth.probes.spans.wire import Span

# Seconds; wide enough for CPU-tiny and 70B TP engines alike. Fixed for the life of a series.
LATENCY_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5,
                  2.0, 3.0, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
METRICS = ("queue", "prefill", "decode", "ttft", "tpot", "e2e")
EVICT_REASONS = ("capacity", "timeout", "exited", "closed_by_engine")


@dataclass(slots=True)
class FixedHist:
    """Counts per fixed upper bound (non-cumulative), plus count and sum."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS) + 1))
    count: int = 0
    sum: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BOUNDS, value)] += 1
        self.count += 1
        self.sum += value

    def snapshot(self) -> LatencyHistogram:
        return LatencyHistogram(list(LATENCY_BOUNDS), list(self.counts), self.count, self.sum)


@dataclass(slots=True)
class RequestTrace:
    request_id: str
    pid: int
    rank: int
    start_ns: int = 0
    end_ns: int = 0
    phases: dict[str, tuple[int, int]] = field(default_factory=dict)
    prompt_tokens: int = 0
    output_tokens: int = 0
    status: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)

    def add(self, span: Span) -> None:
        if span.phase == "finished":
            self.end_ns = span.end_ns
            self.output_tokens = span.tokens
            self.status = str(span.attrs.get("status", ""))
            self.attrs = dict(span.attrs)
            return
        lo, hi = self.phases.get(span.phase, (span.start_ns, span.end_ns))
        self.phases[span.phase] = (min(lo, span.start_ns), max(hi, span.end_ns))
        if span.phase == "queued" and span.tokens:
            self.prompt_tokens = span.tokens
        self.start_ns = min(self.start_ns or span.start_ns, span.start_ns)

    def _phase_s(self, name: str) -> float | None:
        if name not in self.phases:
            return None
        lo, hi = self.phases[name]
        return (hi - lo) / 1e9

    def summary(self) -> RequestRow:
        """One row of the `requests` list: the engine's own figures where it sent them, else from the phases."""
        ttft = self.attrs.get("ttft_s")
        e2e = self.attrs.get("e2e_s")
        if e2e is None and self.end_ns and self.start_ns:
            e2e = (self.end_ns - self.start_ns) / 1e9
        return {"request_id": self.request_id, "pid": self.pid, "rank": self.rank, "start_ns": self.start_ns,
                "end_ns": self.end_ns, "received_s": self._phase_s("received"), "queue_s": self._phase_s("queued"),
                "prefill_s": self._phase_s("prefill"), "decode_s": self._phase_s("decode"),
                "stream_s": self._phase_s("stream"), "ttft_s": ttft, "tpot_s": self.attrs.get("tpot_s"),
                "e2e_s": e2e, "prompt_tokens": self.prompt_tokens, "output_tokens": self.output_tokens,
                "status": self.status, "num_preemptions": self.attrs.get("num_preemptions", 0)}


class RequestBook:
    """In-flight traces by (pid, request_id), the most recent finished ones, and latency histograms per engine."""

    def __init__(self, max_recent: int, max_in_flight: int = 100_000, max_done: int = 20_000) -> None:
        self.in_flight: dict[tuple[int, str], RequestTrace] = {}  # in order of first span: oldest first
        self.recent: deque[RequestRow] = deque(maxlen=max_recent)
        self.hists: dict[int, dict[str, FixedHist]] = {}
        self.finished_total = 0
        self.evicted: dict[str, int] = dict.fromkeys(EVICT_REASONS, 0)
        self.late_spans = 0  # spans of a request already finished, dropped
        self._max_in_flight = max_in_flight
        self._done: dict[tuple[int, str], None] = {}  # recently finished keys, oldest first
        self._max_done = max_done

    @property
    def evicted_in_flight(self) -> int:
        """All in-flight requests forgotten unfinished (gpusleuth_requests_evicted_in_flight)."""
        return sum(self.evicted.values())

    def add(self, pid: int, span: Span) -> None:
        key = (pid, span.request_id)
        trace = self.in_flight.get(key)
        if trace is None:
            if key in self._done:
                self.late_spans += 1
                return
            if len(self.in_flight) >= self._max_in_flight:  # an engine that never finishes its requests
                self.in_flight.pop(next(iter(self.in_flight)))
                self.evicted["capacity"] += 1
            trace = self.in_flight[key] = RequestTrace(span.request_id, pid, span.rank)
        trace.add(span)
        if span.phase == "finished":
            del self.in_flight[key]
            self._done[key] = None
            if len(self._done) > self._max_done:
                del self._done[next(iter(self._done))]
            self._finish(trace)

    def expire(self, now_ns: int, timeout_ns: int) -> int:
        """Forget requests in flight for longer than `timeout_ns`; how many. Oldest first, stopping at the first
        younger one (first spans arrive about in start order, so a straggler waits at most one more of them)."""
        num = 0
        while self.in_flight:
            key, trace = next(iter(self.in_flight.items()))
            if now_ns - trace.start_ns <= timeout_ns:
                break
            del self.in_flight[key]
            num += 1
        self.evicted["timeout"] += num
        return num

    def close_before(self, pid: int, oldest_ns: int) -> int:
        """The engine says its oldest request in flight arrived at `oldest_ns` (its heartbeat): any of its requests
        held open here from before finished without their "finished" span reaching the agent; forget them."""
        keys = [k for k, t in self.in_flight.items() if k[0] == pid and t.start_ns < oldest_ns]
        for key in keys:
            del self.in_flight[key]
        self.evicted["closed_by_engine"] += len(keys)
        return len(keys)

    def forget_engine(self, pid: int) -> int:
        """Forget the in-flight requests of an engine that exited; how many."""
        keys = [k for k in self.in_flight if k[0] == pid]
        for key in keys:
            del self.in_flight[key]
        self.evicted["exited"] += len(keys)
        return len(keys)

    def _finish(self, trace: RequestTrace) -> None:
        row = trace.summary()
        self.recent.append(row)
        self.finished_total += 1
        hists = self.hists.setdefault(trace.pid, {m: FixedHist() for m in METRICS})
        for metric in METRICS:
            value = row.get(f"{metric}_s")
            if value is not None and row["status"] != "abort":
                hists[metric].observe(float(value))
