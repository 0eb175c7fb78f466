"""Synthetic engine spans, for checking the intake against requests of known timing: the spans of one finished
request, and a sender that writes them to an intake socket as the engine does (wire.py is the format)."""
from __future__ import annotations

import os
import socket

from gpusleuth.probes.spans.wire import Span, encode

SPANS_PER_DATAGRAM = 50  # well under wire.MAX_DATAGRAM for spans of this size


def request_spans(request_id: str, start_ns: int, queue_s: float, prefill_s: float, decode_s: float,
                  output_tokens: int = 32) -> list[Span]:
    """The spans of one finished request (queued -> prefill -> decode -> finished) with its TTFT/TPOT/e2e."""
    q_end = start_ns + int(queue_s * 1e9)
    p_end = q_end + int(prefill_s * 1e9)
    end = p_end + int(decode_s * 1e9)
    ttft = (p_end - start_ns) / 1e9
    return [Span("request", "queued", request_id, 0, start_ns, q_end, tokens=100),
            Span("request", "prefill", request_id, 0, q_end, p_end, tokens=100, batch_size=4),
            Span("request", "decode", request_id, 0, p_end, end, tokens=output_tokens - 1, batch_size=4),
            Span("request", "finished", request_id, 0, end, end, tokens=output_tokens,
                 attrs={"ttft_s": ttft, "tpot_s": decode_s / (output_tokens - 1), "e2e_s": (end - start_ns) / 1e9,
                        "status": "stop"})]


def send_spans(path: str, spans: list[Span]) -> None:
    """Datagrams to the span intake listening at `path`, from this process's pid, as the engine sends them."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        for i in range(0, len(spans), SPANS_PER_DATAGRAM):
            s.sendto(encode(os.getpid(), spans[i:i + SPANS_PER_DATAGRAM]), path)
