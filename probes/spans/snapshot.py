"""What the span intake publishes each poll (`store.snapshot("spans")`): engines that send spans, counters, latency
histograms per engine process, and the most recent finished requests.

A request row stays a TypedDict: it is also the `requests` control method's row and what `explain` and the
recording replay take and build, all of which treat it as a plain mapping.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing_extensions import NotRequired, TypedDict  # pydantic needs these on Python < 3.12 (snapshot_codec.py)


class RequestRow(TypedDict):
    """One finished request: the engine's own figures where it sent them, else from its phases (seconds)."""

    request_id: str
    pid: int
    rank: int
    start_ns: int
    end_ns: int
    received_s: NotRequired[float | None]  # HTTP handler -> scheduler (None from engines without the phase)
    queue_s: float | None
    prefill_s: float | None
    decode_s: float | None
    stream_s: NotRequired[float | None]  # last token -> response written
    ttft_s: float | None
    tpot_s: float | None
    e2e_s: float | None
    prompt_tokens: int
    output_tokens: int
    status: str  # the engine's finish reason ("stop", "length", "abort", ...)
    num_preemptions: int


@dataclass(slots=True)
class LatencyHistogram:
    """Counts per fixed upper bound in seconds (not cumulative; the last entry is +Inf), plus count and sum."""

    bounds: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    count: int = 0
    sum: float = 0.0


@dataclass(slots=True)
class SpanSender:
    """One engine process that sends spans. The gauges are rank 0's scheduler state after its last step (None
    until it reports one); the heartbeat fields are its server's last heartbeat (None/0 from engines without)."""

    comm: str = ""
    ranks: list[int] = field(default_factory=list)
    last_seen_ns: int = 0
    spans: int = 0
    num_running: int | None = None
    num_waiting: int | None = None
    kv_usage: float | None = None  # KV cache in use, 0..1
    heartbeat_ns: int = 0  # when the last heartbeat was sent
    num_in_flight: int | None = None  # requests its server had received and not finished, at that heartbeat
    step_tid: int | None = None  # rank 0's step thread, as the heartbeat names it
    step_tids: dict[int, int] = field(default_factory=dict)  # rank -> native tid of the thread running its steps
    last_step_end_ns: dict[int, int] = field(default_factory=dict)  # rank -> end of its last step


@dataclass(slots=True)
class SpansSnapshot:
    t_ns: int = 0
    socket: str = ""
    received_total: int = 0  # datagrams
    decode_errors_total: int = 0  # malformed datagrams dropped
    queue_drops_total: int = 0  # datagrams dropped because too many waited between polls
    spans_total: int = 0
    senders: dict[int, SpanSender] = field(default_factory=dict)  # by pid
    watch_pids: list[int] = field(default_factory=list)  # engine processes the kernel probes should watch
    in_flight: int = 0  # requests started but not finished
    evicted_in_flight: int = 0  # in-flight requests forgotten unfinished (the sum of evicted_by_reason)
    evicted_by_reason: dict[str, int] = field(default_factory=dict)  # capacity, timeout, exited
    late_spans_total: int = 0  # spans of requests already finished (dropped)
    unknown_spans_total: int = 0  # spans of phases this agent does not know (from a newer engine; skipped)
    finished_total: int = 0
    # pid -> metric (queue, prefill, decode, ttft, tpot, e2e) -> histogram; aborted requests are left out
    histograms: dict[int, dict[str, LatencyHistogram]] = field(default_factory=dict)
    recent: list[RequestRow] = field(default_factory=list)  # newest last
