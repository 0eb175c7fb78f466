"""Guards against clients that would tie the server up: a bounded body (413), a deadline for the body (408), a
deadline for the request line and headers (408, then the connection is closed), and a cap on open connections
(503). Every refusal is an OpenAI-style JSON body.

uvicorn closes idle keep-alive connections but never one that trickles its headers, and its own connection limit
answers in plain text: `guarded_protocol` adds both to uvicorn's HTTP protocol class (httptools or h11) through the
two hooks they share (connection_made, on_response_complete) and the per-connection `app` they dispatch to.
"""
from __future__ import annotations

import asyncio
import json
import time

from starlette.exceptions import HTTPException

from gpusleuth.engine.api.errors import ApiError

RECEIVED_NS = "gs_received_ns"  # scope["state"] key: when the request's headers were complete ("received" starts)


def _raw(status: int, reason: str, message: str) -> bytes:
    body = json.dumps(ApiError(status, message).body()).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: close\r\n\r\n").encode() + body


class BodyGuard:
    """ASGI middleware: refuse bodies over `max_body_bytes` (413) or slower than `read_timeout_s` (408)."""

    def __init__(self, app, max_body_bytes: int, read_timeout_s: float) -> None:
        self.app, self.max_body_bytes, self.read_timeout_s = app, max_body_bytes, read_timeout_s

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope.setdefault("state", {})[RECEIVED_NS] = time.monotonic_ns()
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            err = ApiError(413 if length.isdigit() else 400,
                           f"the body is larger than {self.max_body_bytes} bytes" if length.isdigit()
                           else "the Content-Length header is not a number")
            return await err.response()(scope, receive, send)
        await self.app(scope, self._receiver(receive), send)

    def _receiver(self, receive):
        deadline = asyncio.get_running_loop().time() + self.read_timeout_s
        state = {"bytes": 0, "is_done": False}

        async def guarded():
            if state["is_done"]:  # after the body: disconnect watchers wait here with no deadline
                return await receive()
            try:
                msg = await asyncio.wait_for(receive(), max(0.0, deadline - asyncio.get_running_loop().time()))
            except TimeoutError:
                raise HTTPException(408, f"the request body did not arrive within {self.read_timeout_s:g} s") \
                    from None
            if msg["type"] == "http.request":
                state["bytes"] += len(msg.get("body", b""))
                if state["bytes"] > self.max_body_bytes:
                    raise HTTPException(413, f"the body is larger than {self.max_body_bytes} bytes")
                state["is_done"] = not msg.get("more_body", False)
            else:
                state["is_done"] = True
            return msg

        return guarded


async def _too_many_connections(scope, receive, send) -> None:
    err = ApiError(503, "too many open connections; retry later", None, "service_unavailable", 1)
    resp = err.response()
    resp.headers["connection"] = "close"
    await resp(scope, receive, send)


def guarded_protocol(base: type, header_timeout_s: float, max_connections: int) -> type:
    """`base` (a uvicorn HTTP protocol class) with a header deadline and a connection cap."""

    class GuardedProtocol(base):
        _header_timer: asyncio.TimerHandle | None = None
        _armed_cycle: object = None
        _has_data = False  # since the timer was armed: a client mid-request gets a 408, an idle one is just closed

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                self.app = _too_many_connections  # answered (JSON 503) once its headers are in
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def data_received(self, data: bytes) -> None:
            self._has_data = True
            super().data_received(data)

        def connection_lost(self, exc) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._armed_cycle = self.cycle  # a new request replaces the cycle once its headers are complete
            self._has_data = False
            self._header_timer = self.loop.call_later(header_timeout_s, self._on_header_timeout)

        def _on_header_timeout(self) -> None:
            if self.cycle is not self._armed_cycle or self.transport.is_closing():
                return  # a request started in time
            if self._has_data or self.cycle is None:
                self.transport.write(_raw(408, "Request Timeout",
                                          f"the request headers did not arrive within {header_timeout_s:g} s"))
            self.transport.close()

    GuardedProtocol.__name__ = f"Guarded{base.__name__}"
    return GuardedProtocol
