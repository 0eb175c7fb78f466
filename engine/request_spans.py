"""The HTTP server thread's spans (diagnosis contract §1): each request's "received" and "stream" phases and its
"finished" span, and a heartbeat every 0.5 s.

They come from the server thread, with an emitter of its own (SpanEmitter is one-thread), so they arrive while the
step loop is stuck: the heartbeat says how many requests are in flight (received, not finished) and which thread
runs the steps. Every request the server hands to the scheduler gets exactly one "finished" span, from here: the
engine leaves it to the server (LLMEngine.is_finish_deferred), which alone knows when the response was written or
the client went away.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Callable

from gpusleuth.engine.outputs import RequestOutput
from gpusleuth.engine.spans import SpanEmitter

HEARTBEAT_S = 0.5


@dataclass(slots=True)
class RequestTrack:
    """One request as the server sees it: when its handler started and the last update it took from the engine."""

    request_id: str
    received_ns: int
    last: RequestOutput | None = None
    status: str = ""  # "error" once the request failed (engine dead, or this request alone)


class ServerSpans:
    def __init__(self, emitter: SpanEmitter, step_tid: Callable[[], int | None]) -> None:
        self.emitter = emitter
        self.step_tid = step_tid
        self.in_flight: dict[str, RequestTrack] = {}

    def received(self, track: RequestTrack, handoff_ns: int, read_ns: int, tokenize_ns: int) -> None:
        """The request was handed to the scheduler at `handoff_ns`; `read_ns`/`tokenize_ns`: time reading the body
        and tokenizing it (parsing included)."""
        self.in_flight[track.request_id] = track
        self.emitter.add("request", "received", track.request_id, track.received_ns, handoff_ns,
                         read_ms=round(read_ns / 1e6, 4), tokenize_ms=round(tokenize_ns / 1e6, 4))
        self.emitter.flush()

    def finished(self, track: RequestTrack, is_written: bool, status: str = "abort") -> None:
        """The response is written (`is_written`), or the request ended otherwise (client gone, engine dead):
        its "stream" span where the engine had finished it, then "finished"."""
        if self.in_flight.pop(track.request_id, None) is None:
            return
        now = time.monotonic_ns()
        last = track.last
        info = last.finish if last is not None else None
        attrs = dict(info.attrs) if info is not None else {"ttft_s": None, "tpot_s": None, "num_preemptions": 0}
        if info is not None:
            self.emitter.add("request", "stream", track.request_id, info.end_ns, now)
        if is_written and last is not None and last.finish_reason:
            status = last.finish_reason
        attrs["status"] = status
        attrs["e2e_s"] = (now - track.received_ns) / 1e9
        tokens = last.num_output_tokens if last is not None else 0
        self.emitter.add("request", "finished", track.request_id, now, now, tokens, 0, **attrs)
        self.emitter.flush()

    def heartbeat(self) -> None:
        now = time.monotonic_ns()
        # the oldest request still in flight: the agent closes any it holds open from before (a lost "finished")
        oldest = min((t.received_ns for t in self.in_flight.values()), default=now)
        self.emitter.add("step", "heartbeat", "heartbeat", now, now, num_in_flight=len(self.in_flight),
                         tid=self.step_tid(), oldest_in_flight_ns=oldest)
        self.emitter.flush()  # also sends the process's garbage collections that no step has sent

    async def run_heartbeats(self) -> None:
        """Heartbeats until cancelled."""
        while True:
            self.heartbeat()
            await asyncio.sleep(HEARTBEAT_S)
