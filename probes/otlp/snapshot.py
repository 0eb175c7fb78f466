"""What the OTLP intake publishes each poll (`store.snapshot("otlp")`): its listeners and counters, and the
processes whose requests it passed on to the span intake."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class OtlpSender:
    """One process whose request spans arrived over OTLP (joined by its connection, else its resource)."""

    service: str = ""  # resource service.name
    joined_by: str = ""  # "peer" (the connection's owner), "resource" (process.pid & co.) or "none"
    requests: int = 0
    last_seen_ns: int = 0


@dataclass(slots=True)
class OtlpSnapshot:
    t_ns: int = 0
    http_listen: str = ""  # where OTLP/HTTP is served ("" = off)
    grpc_listen: str = ""  # where OTLP/gRPC is served ("" = off or unavailable)
    span_socket: str = ""  # the span intake it forwards request phases to
    payloads_total: int = 0
    decode_errors_total: int = 0
    queue_drops_total: int = 0  # payloads refused because too many waited between polls
    spans_total: int = 0
    requests_total: int = 0  # request spans turned into phases
    unphased_total: int = 0  # request spans without the latency attributes to split them
    other_spans_total: int = 0  # spans that are not requests (loading, code spans), ignored
    forward_errors_total: int = 0  # datagrams the span intake did not take (not listening, full)
    senders: dict[int, OtlpSender] = field(default_factory=dict)  # by pid (0: the sender could not be named)
