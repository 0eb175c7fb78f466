"""Running one HTTP request on the engine: submit its choices, follow their updates, answer streamed or not, and
free everything when it ends or the client leaves.

Every choice is its own engine request (id = the response id, or `<id>-<index>` when there are several), so each
has the spans of the diagnosis contract: "received" once it is handed over, "stream" and "finished" once the answer
is written or the request ended otherwise (request_spans.py). A client that disconnects is noticed at once (an
asyncio task waits for the ASGI disconnect) and its choices are aborted, which frees their KV blocks and updates
the gauges without waiting for another step.
"""
from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from gpusleuth.engine.api.answers import DONE, Answer
from gpusleuth.engine.api.errors import ApiError
from gpusleuth.engine.api.guards import RECEIVED_NS
from gpusleuth.engine.api.params import Plan
from gpusleuth.engine.loop import EngineDead, EngineLoop, QueueFull, RequestFailed
from gpusleuth.engine.outputs import RequestOutput
from gpusleuth.engine.request_spans import RequestTrack, ServerSpans
from gpusleuth.engine.sequence import SamplingError


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class EventStream(Response):
    """Server-sent events written by `write(send)` while a task watches for the client leaving (then the writer is
    cancelled); `close(is_complete)` runs in every case, after the last byte or the cancellation."""

    media_type = "text/event-stream"

    def __init__(self, write: Callable[[Callable], Awaitable[None]], close: Callable[[bool], None]) -> None:
        # no Response.__init__: it would add content-length: 0 (the body is streamed, chunked)
        self.status_code, self.background = 200, None
        self.raw_headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
        self.write, self.close = write, close

    async def __call__(self, scope, receive, send) -> None:
        writer = asyncio.ensure_future(self._stream(send))
        watcher = asyncio.ensure_future(_disconnected(receive))
        is_complete = False
        try:
            await asyncio.wait((writer, watcher), return_when=asyncio.FIRST_COMPLETED)
            is_complete = writer.done() and not writer.cancelled() and writer.exception() is None
        finally:
            for task in (writer, watcher):
                task.cancel()
            await asyncio.gather(writer, watcher, return_exceptions=True)
            self.close(is_complete)

    async def _stream(self, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await self.write(send)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class Serving:
    """The engine loop, its span sender and the served model name, shared by every route."""

    def __init__(self, loop: EngineLoop, spans: ServerSpans, model_name: str, retry_after_s: int) -> None:
        self.loop, self.spans, self.model_name, self.retry_after_s = loop, spans, model_name, retry_after_s

    async def run(self, request: Request, plan: Plan, answer: Answer, handler_ns: int) -> Response:
        """Submit `plan` and answer it: an event stream, or one JSON body once every choice finished.
        `handler_ns`: when the route's handler started (the body read and validated; spans' read_ms ends)."""
        received_ns = request.scope.get("state", {}).get(RECEIVED_NS) or handler_ns  # spans
        read_ns = handler_ns
        engine = self.loop.engine
        try:
            for job in plan.jobs:  # all or nothing: nothing is submitted before every choice fits
                engine.check_request(job.prompt_ids, job.params)
        except SamplingError as exc:
            raise ApiError(400, str(exc), exc.param) from None
        queue: asyncio.Queue = asyncio.Queue()
        tracks = self._submit(plan, answer.request_id, queue, received_ns, read_ns)
        if plan.is_stream:
            return EventStream(lambda send: self._write_events(send, queue, tracks, answer),
                               lambda ok: self._close(tracks, ok))
        watcher = asyncio.ensure_future(_disconnected(request.receive))
        collect = asyncio.ensure_future(self._collect(queue, tracks, answer))
        try:
            await asyncio.wait((collect, watcher), return_when=asyncio.FIRST_COMPLETED)
            if not collect.done():  # the client left
                self._close(tracks, False)
                return Response(status_code=499)
            collect.result()  # raises the request's failure
        except BaseException:
            self._close(tracks, False)
            raise
        finally:
            for task in (collect, watcher):
                task.cancel()
        return Response(answer.body(), media_type="application/json",
                        background=BackgroundTask(self._close, tracks, True))  # spans: "stream" ends when sent

    def _submit(self, plan: Plan, request_id: str, queue: asyncio.Queue, received_ns: int,
                read_ns: int) -> dict[str, tuple[int, RequestTrack]]:
        tracks: dict[str, tuple[int, RequestTrack]] = {}
        handoff_ns = time.monotonic_ns()  # spans: "received" ends, "queued" starts
        try:
            for job in plan.jobs:
                engine_id = request_id if len(plan.jobs) == 1 else f"{request_id}-{job.index}"
                self.loop.submit(engine_id, job.prompt_ids, job.params, received_ns, handoff_ns, queue=queue)
                track = RequestTrack(engine_id, received_ns)
                tracks[engine_id] = (job.index, track)
                self.spans.received(track, handoff_ns, read_ns - received_ns, handoff_ns - read_ns)  # spans
        except QueueFull as exc:
            self._close(tracks, False)
            raise ApiError(429, str(exc), None, "rate_limit_error", self.retry_after_s) from None
        except EngineDead as exc:
            self._close(tracks, False, "error")
            raise ApiError(503, str(exc), None, "service_unavailable", self.retry_after_s) from None
        return tracks

    async def _updates(self, queue: asyncio.Queue, tracks: dict) -> list[tuple[int, RequestOutput]]:
        """The next batch of (choice index, update): everything queued by then, so a slow reader catches up."""
        items = [await queue.get()]
        while not queue.empty():
            items.append(queue.get_nowait())
        out = []
        for item in items:
            if isinstance(item, (EngineDead, RequestFailed)) or item.finish_reason == "error":
                for _, track in tracks.values():
                    track.status = "error"  # spans
            if isinstance(item, EngineDead):
                raise ApiError(503, str(item), None, "service_unavailable", self.retry_after_s)
            if isinstance(item, RequestFailed):
                raise ApiError(item.status, item.message, item.param)
            if item.finish_reason == "error":
                raise ApiError(500, f"the engine failed this request: {item.error}")
            index, track = tracks[item.request_id]
            track.last = item  # spans: the last update carries the engine's "finished" attributes
            out.append((index, item))
        return out

    async def _collect(self, queue: asyncio.Queue, tracks: dict, answer: Answer) -> None:
        remaining = len(tracks)
        while remaining:
            for index, out in await self._updates(queue, tracks):
                answer.take(index, out)
                remaining -= out.is_finished

    async def _write_events(self, send, queue: asyncio.Queue, tracks: dict, answer: Answer) -> None:
        start = answer.start()
        if start:
            await send({"type": "http.response.body", "body": start, "more_body": True})
        remaining = len(tracks)
        try:
            while remaining:
                updates = await self._updates(queue, tracks)
                data = "".join(answer.chunk(index, out) for index, out in updates).encode()
                remaining -= sum(out.is_finished for _, out in updates)
                await send({"type": "http.response.body", "body": data, "more_body": True})
        except ApiError as exc:  # the status is sent already: the error goes into the stream, as vLLM does
            body = b"data: " + exc.response().body + b"\n\n" + DONE
            await send({"type": "http.response.body", "body": body, "more_body": True})
            return
        tail = answer.usage_event() if answer.plan.is_include_usage else b""
        await send({"type": "http.response.body", "body": tail + DONE, "more_body": True})

    def _close(self, tracks: dict, is_written: bool, status: str = "abort") -> None:
        """Abort what is still running (client gone, failure) and send each choice's "stream" and "finished"."""
        for engine_id, (_, track) in tracks.items():
            last = track.last
            if last is None or not last.is_finished:  # a choice still running: its client or a sibling failed
                self.loop.abort(engine_id)
            self.spans.finished(track, is_written, track.status or status)  # spans
