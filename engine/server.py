"""OpenAI-compatible HTTP front end (aiohttp) on rank 0: /v1/completions (SSE streaming or not), /v1/models,
/health, /metrics (vLLM names), and /debug/faults to switch fault hooks at run time.

Overload: more than `max_waiting` queued requests get 429 with Retry-After; a dead or stopping engine gets 503.
A client that goes away mid-request (handler cancelled or the write fails) aborts its request, freeing its KV.
Spans: each request's received/stream/finished spans and the heartbeat come from this thread (request_spans.py);
the lines that feed them are marked `# spans:`.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import time
import uuid

from aiohttp import web

from gpusleuth.probes.config import ConfigError
from gpusleuth.engine.config import ServerConfig
from gpusleuth.engine.faults import FaultConfig
from gpusleuth.engine.loop import EngineDead, EngineLoop, QueueFull
from gpusleuth.engine.outputs import RequestOutput
from gpusleuth.engine.protocol import ApiError, chunk, completion, parse_completion, usage_chunk
from gpusleuth.engine.request_spans import RequestTrack, ServerSpans
from gpusleuth.engine.sequence import SamplingError



def _app_key(name: str, typ: type):
    # aiohttp >= 3.9 has typed keys (string keys warn there); older aiohttp on GPU hosts takes strings
    return web.AppKey(name, typ) if hasattr(web, "AppKey") else name


LOOP_KEY = _app_key("engine_loop", EngineLoop)
CFG_KEY = _app_key("server_config", ServerConfig)
NAME_KEY = _app_key("model_name", str)
SPANS_KEY = _app_key("server_spans", ServerSpans)


def _error(exc: ApiError, retry_after: int | None = None) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return web.json_response(exc.body(), status=exc.status, headers=headers)


async def _results(queue: asyncio.Queue, track: RequestTrack):
    while True:
        item = await queue.get()
        if isinstance(item, EngineDead):
            raise item
        track.last = item  # spans: the last update carries the engine's "finished" attributes
        yield item
        if item.is_finished:
            return


async def completions(request: web.Request) -> web.StreamResponse:
    loop, cfg, name = request.app[LOOP_KEY], request.app[CFG_KEY], request.app[NAME_KEY]
    spans, received_ns = request.app[SPANS_KEY], time.monotonic_ns()  # spans: "received" starts
    metrics = loop.engine.metrics
    try:
        body = json.loads(await request.read())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        metrics.rejected.labels("bad_request").inc()
        return _error(ApiError(400, f"the body is not valid JSON: {exc}"))
    request_id = f"cmpl-{uuid.uuid4().hex}"
    track, read_ns = RequestTrack(request_id, received_ns), time.monotonic_ns()  # spans
    try:
        req = parse_completion(body, loop.engine.tokenizer, name)
        handoff_ns = time.monotonic_ns()  # spans: "received" ends, "queued" starts
        queue = loop.submit(request_id, req.prompt_ids, req.params, received_ns, handoff_ns)
    except ApiError as exc:
        metrics.rejected.labels("bad_request").inc()
        return _error(exc)
    except SamplingError as exc:
        metrics.rejected.labels("bad_request").inc()
        return _error(ApiError(400, str(exc), exc.param))
    except QueueFull as exc:
        metrics.rejected.labels("queue_full").inc()
        return _error(ApiError(429, str(exc), None, "rate_limit_error"), cfg.retry_after_s)
    except EngineDead as exc:
        metrics.rejected.labels("engine_unavailable").inc()
        return _error(ApiError(503, str(exc), None, "service_unavailable"), cfg.retry_after_s)
    spans.received(track, handoff_ns, read_ns - received_ns, handoff_ns - read_ns)  # spans
    is_done, status = False, "abort"
    try:
        if req.is_stream:
            resp = await _stream(request, queue, request_id, name, req.is_include_usage, track)
        else:
            texts = []
            async for out in _results(queue, track):
                texts.append(out.delta_text)
            resp = web.json_response(completion(request_id, name, "".join(texts), track.last))
            await resp.prepare(request)  # spans: written here, so "stream" ends when the body is out
            await resp.write_eof()
        is_done = True
        return resp
    except EngineDead as exc:
        status = "error"  # spans
        return _error(ApiError(503, str(exc), None, "service_unavailable"), cfg.retry_after_s)
    finally:
        if not is_done:  # cancelled (client left), write failed, or the engine died: free the KV now
            loop.abort(request_id)
        spans.finished(track, is_done, status)  # spans: "stream" and "finished"


async def _stream(request: web.Request, queue: asyncio.Queue, request_id: str, name: str,
                  with_usage: bool, track: RequestTrack) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    created = int(time.time())
    last: RequestOutput | None = None
    async for out in _results(queue, track):
        last = out
        body = chunk(request_id, name, created, out.delta_text, out.finish_reason, with_usage)
        await resp.write(b"data: " + json.dumps(body).encode() + b"\n\n")
    if with_usage and last is not None:
        await resp.write(b"data: " + json.dumps(usage_chunk(request_id, name, created, last)).encode() + b"\n\n")
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def models(request: web.Request) -> web.Response:
    name, engine = request.app[NAME_KEY], request.app[LOOP_KEY].engine
    return web.json_response({"object": "list", "data": [{
        "id": name, "object": "model", "created": 0, "owned_by": "gpusleuth", "root": name,
        "max_model_len": engine.max_model_len}]})


async def health(request: web.Request) -> web.Response:
    loop = request.app[LOOP_KEY]
    if loop.is_alive:
        return web.json_response({"status": "ok"})
    return web.json_response({"status": "dead", "error": loop.error}, status=503)


async def metrics(request: web.Request) -> web.Response:
    # Text 0.0.4 whatever Accept says. prometheus_client >= 0.23 (choose_encoder) answers a scraper asking for
    # OpenMetrics without escaping=allow-utf-8 (Prometheus 2.x) with `vllm_...` sample names, which breaks vLLM
    # dashboards (client_python issue #1177). The library names this content type only from 0.23 on.
    data = request.app[LOOP_KEY].engine.metrics.render()
    return web.Response(body=data, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def faults(request: web.Request) -> web.Response:
    loop = request.app[LOOP_KEY]
    if request.method == "GET":
        return web.json_response(loop.engine.faults.config.to_dict())
    try:
        data = json.loads(await request.read())
        if not isinstance(data, dict):
            raise ApiError(400, "expected a JSON object of fault settings")
        config = FaultConfig.from_dict(data, loop.engine.faults.config)
    except json.JSONDecodeError as exc:
        return _error(ApiError(400, f"the body is not valid JSON: {exc}"))
    except ConfigError as exc:
        return _error(ApiError(400, str(exc), exc.key))
    except ApiError as exc:
        return _error(exc)
    loop.set_faults(config)
    return web.json_response(config.to_dict())


def make_app(loop: EngineLoop, cfg: ServerConfig, model_name: str) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[LOOP_KEY], app[CFG_KEY], app[NAME_KEY] = loop, cfg, model_name
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_route("*", "/debug/faults", faults)
    return app


async def serve(loop: EngineLoop, cfg: ServerConfig, model_name: str, stop: asyncio.Event,
                ready: asyncio.Future | None = None) -> None:
    """Run the server until `stop` is set; `ready` gets the bound port (useful with port 0)."""
    spans = ServerSpans(loop.engine.emitter.sibling(), lambda: loop.step_tid)  # spans: this thread's emitter
    loop.engine.metrics.add_emitter(spans.emitter)
    loop.engine.is_finish_deferred = True  # spans: "finished" comes from here, after the response is written
    loop.start(asyncio.get_running_loop())
    # handler_cancellation (aiohttp >= 3.9): a client that disconnects cancels its handler, which aborts the request
    kwargs = {"handler_cancellation": True} if "handler_cancellation" in inspect.signature(
        web.Server.__init__).parameters else {}
    app = make_app(loop, cfg, model_name)
    app[SPANS_KEY] = spans
    runner = web.AppRunner(app, access_log=None, **kwargs)
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port)
    await site.start()
    if ready is not None:
        ready.set_result(site._server.sockets[0].getsockname()[1])
    heartbeats = asyncio.create_task(spans.run_heartbeats())  # spans
    try:
        await stop.wait()
    finally:
        heartbeats.cancel()
        await runner.cleanup()
        await asyncio.to_thread(loop.stop)
        spans.emitter.close()
