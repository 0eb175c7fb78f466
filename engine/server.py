"""The OpenAI-compatible HTTP server on rank 0: the FastAPI app of engine/api/ served by uvicorn, on the calling
thread's asyncio loop (the CLI's `gs-http` thread).

uvicorn runs with httptools where installed (h11 otherwise), its protocol class wrapped by api/guards.py (header
deadline, connection cap), and closes idle keep-alive connections after `keep_alive_s`. Overload: more than
`max_waiting` queued requests get 429 with Retry-After; a stopping engine gets 503. If the engine cannot continue
(its step raised: a CUDA error), every open request is failed, /health answers 503 for `fatal_exit_grace_s`, then
the server stops and `serve` returns with `loop.error` set (the CLI exits 1, so systemd or Kubernetes restarts it).
Spans: each request's received/stream/finished spans and the heartbeat come from this thread (request_spans.py,
api/serving.py).
"""
from __future__ import annotations

import asyncio
import gc
import logging
import socket

from gpusleuth.engine.api.app import make_app
from gpusleuth.engine.api.chat_template import ChatTemplate, load_chat_template
from gpusleuth.engine.api.guards import guarded_protocol
from gpusleuth.engine.api.serving import Serving
from gpusleuth.engine.config import ServerConfig
from gpusleuth.engine.loop import EngineLoop
from gpusleuth.engine.request_spans import ServerSpans

log = logging.getLogger("gpusleuth.engine")


def http_protocol() -> type:
    """uvicorn's httptools protocol (C parser) when httptools is installed, else its h11 one."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        return HttpToolsProtocol
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol
        return H11Protocol


def _listen(cfg: ServerConfig) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in cfg.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((cfg.host, cfg.port))
    sock.set_inheritable(True)
    return sock


def _uvicorn(app, cfg: ServerConfig):
    import uvicorn

    config = uvicorn.Config(app, http=guarded_protocol(http_protocol(), cfg.header_timeout_s, cfg.max_connections),
                            lifespan="off", log_config=None, access_log=False, timeout_keep_alive=cfg.keep_alive_s,
                            timeout_graceful_shutdown=5, backlog=2048, server_header=False)
    return uvicorn.Server(config)


async def serve(loop: EngineLoop, cfg: ServerConfig, model_name: str, stop: asyncio.Event,
                ready: asyncio.Future | None = None, chat_template: ChatTemplate | None = None) -> None:
    """Run the server until `stop` is set (or the engine failed); `ready` gets the bound port (port 0 works)."""
    spans = ServerSpans(loop.engine.emitter.sibling(), lambda: loop.step_tid)  # spans: this thread's emitter
    loop.engine.metrics.add_emitter(spans.emitter)
    loop.engine.is_finish_deferred = True  # spans: "finished" comes from here, after the response is written
    aio = asyncio.get_running_loop()
    loop.on_fatal = lambda: aio.call_later(cfg.fatal_exit_grace_s, stop.set)
    loop.start(aio)
    serving = Serving(loop, spans, model_name, cfg.retry_after_s)
    server = _uvicorn(make_app(serving, cfg, chat_template or load_chat_template()), cfg)
    sock = _listen(cfg)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    heartbeats = asyncio.create_task(spans.run_heartbeats())  # spans
    try:
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if task.done():
            task.result()  # startup failed: raise it
        # Everything alive now (torch, the model, the tokenizer, the app) lives as long as the process: out of the
        # collector's way, so a full collection scans only request objects (over the tiny preset's 233k start-up
        # objects a full pass took 129 ms on the 2-core CPU box, 0 ms frozen; vLLM freezes after start-up too).
        gc.collect()
        gc.freeze()
        if ready is not None:
            ready.set_result(sock.getsockname()[1])
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait((task, stopped), return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if loop.error:
            log.error("the engine cannot continue (%s): stopping the server", loop.error)
    finally:
        server.should_exit = True
        await asyncio.gather(task, return_exceptions=True)
        heartbeats.cancel()
        sock.close()
        await asyncio.to_thread(loop.stop)
        spans.emitter.close()
