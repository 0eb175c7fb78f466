"""Synthetic engine spans at a fixed request rate, for bench_diagnosis.py: `engine_spans(...)` generates them (4
requests in flight, a 10-token prefill step then 20 decode steps of 10 ms, steps back to back), and run as a script
it sends them in real time to a span socket, as an engine would:  python diagnosis_load.py SOCKET RATE SECONDS
(the steps of the slow seconds are slow for real there: the sender's step thread busy-waits in them, so the agent
sees its run-queue waits on a loaded box, or nothing; the figures are about cost, not verdicts)"""
from __future__ import annotations

import os
import random
import socket
import sys
import time
from typing import Iterator

from gpusleuth.probes.spans.wire import Span, encode

STEP_NS = 10_000_000
DECODE_STEPS = 20


SLOW_EXTRA_NS = 20_000_000  # in the last 2 s of every 10 s the steps take this much longer (a fault)


def slow_extra(t0: int, t: int) -> int:
    return SLOW_EXTRA_NS if (t - t0) % 10_000_000_000 >= 8_000_000_000 else 0


def engine_spans(t0: int, seconds: float, rate: float, seed: int = 1, tid: int = 4001) -> Iterator[Span]:
    """Spans in end-time order of requests arriving every 1/rate s, batched by a loop of 10 ms steps (30 ms in
    the last 2 s of every 10 s)."""
    rng = random.Random(seed)
    arrivals = [t0 + int(i * 1e9 / rate) for i in range(int(seconds * rate))]
    live: dict[str, dict] = {}
    t, n, k = t0, 0, 0
    end = t0 + int(seconds * 1e9) + 2_000_000_000
    while t < end and (k < len(arrivals) or live):
        while k < len(arrivals) and arrivals[k] <= t:
            rid = f"cmpl-{k:032x}"
            live[rid] = {"arrival": arrivals[k], "left": DECODE_STEPS, "first": None}
            yield Span("request", "received", rid, 0, arrivals[k] - 200_000, arrivals[k])
            k += 1
        n += 1
        dur = STEP_NS + rng.randint(0, 2_000_000) + slow_extra(t0, t)
        prefill = [r for r, s in live.items() if s["first"] is None]
        decode = [r for r, s in live.items() if s["first"] is not None]
        yield Span("step", "step", f"step-{n}", 0, t, t + dur, len(live), len(live), {
            "tid": tid, "step_id": n, "num_decode": len(decode), "num_prefill": len(prefill),
            "num_prefill_tokens": 10 * len(prefill), "request_ids": decode + prefill, "num_running": len(live),
            "num_waiting": 0, "kv_usage": 0.2})
        for r in prefill:
            s = live[r]
            s["first"] = t + dur
            yield Span("request", "queued", r, 0, s["arrival"], t, 10, 1)
            yield Span("request", "prefill", r, 0, t, t + dur, 10, 1)
        for r in decode:
            s = live[r]
            s["left"] -= 1
            if s["left"] == 0:
                e = t + dur
                yield Span("request", "decode", r, 0, s["first"], e, DECODE_STEPS - 1, 1)
                yield Span("request", "stream", r, 0, e, e + 100_000)
                yield Span("request", "finished", r, 0, e + 100_000, e + 100_000, DECODE_STEPS, 0,
                           {"ttft_s": (s["first"] - s["arrival"]) / 1e9, "e2e_s": (e - s["arrival"]) / 1e9,
                            "status": "stop"})
                del live[r]
        t += dur


def main() -> int:
    path, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    t0 = time.monotonic_ns()
    batch: list[Span] = []
    for span in engine_spans(t0, seconds, rate, tid=os.getpid()):
        delay = (span.end_ns - time.monotonic_ns()) / 1e9
        if delay > 0:
            if batch:
                sock.sendto(encode(os.getpid(), batch), path)
                batch = []
            time.sleep(delay)
        batch.append(span)
        if len(batch) >= 40:
            sock.sendto(encode(os.getpid(), batch), path)
            batch = []
    return 0


if __name__ == "__main__":
    sys.exit(main())
