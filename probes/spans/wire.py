"""Wire format of engine spans sent to the agent over a local Unix datagram socket (diagnosis contract §1).

One datagram is a UTF-8 JSON object: {"v": 1, "pid": <sender pid>, "spans": [<span>, ...]} where each span is
{"kind": "request"|"step", "phase": str, "request_id": str, "rank": int, "start_ns": int, "end_ns": int,
 "tokens": int, "batch_size": int, "attrs": {...}} with CLOCK_MONOTONIC nanoseconds. Datagrams stay under 60 KiB.

Request phases (kind "request"), one span each, sent when the phase ends; under the HTTP server they tile the
request (each starts where the one before ended):
- "received": the HTTP handler has the request (its body still to read) -> handed to the scheduler; attrs read_ms
  (reading the body), tokenize_ms (parsing and tokenizing it). Sent by the server thread.
- "queued", "prefill", "decode": handed to the scheduler -> first scheduled -> first token -> last token
- "stream": last token -> response written / stream closed (server thread)
- "finished": instant; attrs ttft_s, tpot_s, e2e_s (from "received" start where there is one), status,
  num_preemptions. Under the HTTP server the server thread sends it, after "stream", for every request it handed
  to the scheduler (status "abort" when the client left, "error" when the engine died); offline the engine does.
Step-kind phases (kind "step"; the span's `rank` field says which rank):
- "step": one scheduler step of one rank; attrs tid (native id of the thread that ran it), gpu_index, gpu_uuid
  ("GPU-<uuid>" as NVML names it; None on CPU), num_prefill, num_prefill_tokens, num_decode, step_id (the same step
  on every rank); rank 0 also request_ids, num_running, num_waiting, kv_usage 0..1, num_preempted, preempted_ids;
  gpu_ms + gpu_step: GPU time of an earlier (or this) step from CUDA events, absent on CPU.
- "idle": the step thread waited for work (attrs tid); a wait longer than 0.5 s is sent in pieces of 0.5 s.
- "gc": a Python garbage collection in the engine process (attrs tid of the thread it ran on, generation,
  collected).
- "heartbeat": instant, every 0.5 s from the server thread (attrs num_in_flight, tid = the step thread's).

Compatibility (version 1): the phases of the first version (CORE_PHASES) and the later ones never share a datagram,
because an agent that predates a phase rejects a whole datagram holding it; such an agent then loses only the new
spans. Of one flush the newer phases go first, so a request's "stream" arrives before its "finished". `decode`
skips spans of phases it does not know (counted in Batch.num_unknown) and keeps the rest.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, NamedTuple

VERSION = 1
DEFAULT_SOCKET = "/run/gpusleuth/spans.sock"
SOCKET_ENV = "GPUSLEUTH_SPAN_SOCKET"
MAX_DATAGRAM = 60 * 1024
CORE_PHASES = ("queued", "prefill", "decode", "finished", "step")  # what every version-1 agent accepts
PHASES = CORE_PHASES + ("received", "stream", "idle", "gc", "heartbeat")


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


class Batch(NamedTuple):
    pid: int
    spans: list[Span]
    num_unknown: int  # spans of phases this version does not know, skipped


def decode(data: bytes) -> tuple[int, list[Span]]:
    """Parse one datagram into (sender pid, spans); raise SpanDecodeError naming what is wrong."""
    batch = decode_batch(data)
    return batch.pid, batch.spans


def decode_batch(data: bytes) -> Batch:
    """`decode`, also saying how many spans of unknown phases it skipped (from a newer engine)."""
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
        if span.end_ns < span.start_ns:
            raise SpanDecodeError(f"bad span interval: {item!r}")
        if span.phase in PHASES:
            spans.append(span)
    return Batch(pid, spans, len(raw) - len(spans))
