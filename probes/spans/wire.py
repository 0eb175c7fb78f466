"""Wire format of engine spans sent to the agent over a local Unix datagram socket.

One datagram is a UTF-8 JSON object: {"v": 1, "pid": <sender pid>, "spans": [<span>, ...]} where each span is
{"kind": "request"|"step", "phase": str, "request_id": str, "rank": int, "start_ns": int, "end_ns": int,
 "tokens": int, "batch_size": int, "attrs": {...}} with CLOCK_MONOTONIC nanoseconds.
Request phases: "queued", "prefill", "decode", "finished" (finished carries attrs ttft_s, tpot_s, e2e_s, status);
a "step" span is one scheduler step (phase "step", attrs num_prefill, num_decode; rank 0's also num_running,
num_waiting, kv_usage 0..1 and num_preempted after the step). Datagrams stay under 60 KiB.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

VERSION = 1
DEFAULT_SOCKET = "/run/gpusleuth/spans.sock"
SOCKET_ENV = "GPUSLEUTH_SPAN_SOCKET"
MAX_DATAGRAM = 60 * 1024
PHASES = ("queued", "prefill", "decode", "finished", "step")


def socket_path() -> str:
    """Where spans go: $GPUSLEUTH_SPAN_SOCKET, else the agent's default."""
    return os.environ.get(SOCKET_ENV, DEFAULT_SOCKET)


@dataclass(slots=True)
class Span:
    kind: str
    phase: str
    request_id: str
    rank: int
    start_ns: int
    end_ns: int
    tokens: int = 0
    batch_size: int = 0
    attrs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "phase": self.phase, "request_id": self.request_id, "rank": self.rank,
                "start_ns": self.start_ns, "end_ns": self.end_ns, "tokens": self.tokens,
                "batch_size": self.batch_size, "attrs": self.attrs}


class SpanDecodeError(ValueError):
    """A datagram that is not a valid span batch (counted and dropped by the intake)."""


def encode(pid: int, spans: list[Span]) -> bytes:
    return json.dumps({"v": VERSION, "pid": pid, "spans": [s.to_dict() for s in spans]},
                      separators=(",", ":")).encode()


def decode(data: bytes) -> tuple[int, list[Span]]:
    """Parse one datagram into (sender pid, spans); raise SpanDecodeError naming what is wrong."""
    try:
        msg = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpanDecodeError(f"not JSON: {exc}") from None
    if not isinstance(msg, dict) or msg.get("v") != VERSION:
        raise SpanDecodeError(f"expected an object with v={VERSION}")
    pid, raw = msg.get("pid"), msg.get("spans")
    if not isinstance(pid, int) or not isinstance(raw, list):
        raise SpanDecodeError("expected integer 'pid' and list 'spans'")
    spans = []
    for item in raw:
        try:
            span = Span(kind=str(item["kind"]), phase=str(item["phase"]), request_id=str(item["request_id"]),
                        rank=int(item["rank"]), start_ns=int(item["start_ns"]), end_ns=int(item["end_ns"]),
                        tokens=int(item.get("tokens", 0)), batch_size=int(item.get("batch_size", 0)),
                        attrs=dict(item.get("attrs") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise SpanDecodeError(f"bad span {item!r}: {exc}") from None
        if span.phase not in PHASES or span.end_ns < span.start_ns:
            raise SpanDecodeError(f"bad span phase or interval: {item!r}")
        spans.append(span)
    return pid, spans
