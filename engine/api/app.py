"""The FastAPI application: /v1/completions, /v1/chat/completions (streamed or not), /v1/models, /health,
/metrics (vLLM names, text format 0.0.4) and /debug/faults (fault hooks at run time; not in /openapi.json).

Request bodies are the pydantic models of requests.py, so FastAPI validates them and /openapi.json describes them;
every error is an OpenAI-style body (errors.py).
"""
from __future__ import annotations

import json
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from gpusleuth.engine.api import errors
from gpusleuth.engine.api.answers import ChatAnswer, CompletionAnswer
from gpusleuth.engine.api.chat_template import ChatTemplate
from gpusleuth.engine.api.errors import ERROR_RESPONSES, ApiError
from gpusleuth.engine.api.guards import BodyGuard
from gpusleuth.engine.api.params import chat_plan, check_model, completion_plan
from gpusleuth.engine.api.requests import ChatCompletionRequest, CompletionRequest
from gpusleuth.engine.api.responses import (ChatCompletionChunk, ChatCompletionResponse, CompletionResponse, Health,
                                            ModelCard, ModelList, sse_content)
from gpusleuth.engine.api.serving import Serving
from gpusleuth.engine.config import ServerConfig
from gpusleuth.engine.faults import FaultConfig
from gpusleuth.probes.config import ConfigError

# Text 0.0.4 whatever Accept says. prometheus_client >= 0.23 (choose_encoder) answers a scraper asking for OpenMetrics
# without escaping=allow-utf-8 (Prometheus 2.x) with `vllm_...` sample names, which breaks vLLM dashboards
# (client_python issue #1177).
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_REJECTED = {429: "queue_full", 503: "engine_unavailable"}


def _routes(app: FastAPI, serving: Serving, template: ChatTemplate) -> None:
    loop, name = serving.loop, serving.model_name

    @app.post("/v1/completions", response_model=CompletionResponse,
              responses={**ERROR_RESPONSES, 200: {"content": sse_content(CompletionResponse)}})
    async def completions(body: CompletionRequest, request: Request) -> Response:
        """OpenAI completions: a prompt (text, token ids, or a list of either), n choices each."""
        handler_ns = time.monotonic_ns()
        check_model(body.model, name)
        plan = completion_plan(body, loop.engine.tokenizer)
        answer = CompletionAnswer(plan, f"cmpl-{uuid.uuid4().hex}", name, loop.engine.tokenizer)
        return await serving.run(request, plan, answer, handler_ns)

    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse,
              responses={**ERROR_RESPONSES, 200: {"content": sse_content(ChatCompletionChunk)}})
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        """OpenAI chat completions: the messages rendered with the model's chat template."""
        handler_ns = time.monotonic_ns()
        check_model(body.model, name)
        plan = chat_plan(body, loop.engine.tokenizer, template, loop.engine.max_model_len)
        answer = ChatAnswer(plan, f"chatcmpl-{uuid.uuid4().hex}", name, loop.engine.tokenizer)
        return await serving.run(request, plan, answer, handler_ns)

    @app.get("/v1/models", response_model=ModelList)
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=name, root=name, max_model_len=loop.engine.max_model_len)])

    @app.get("/health", response_model=Health, responses={503: {"model": Health}})
    async def health() -> Response:
        if loop.is_alive:
            return JSONResponse(Health(status="ok").model_dump(exclude_none=True))
        body = Health(status="dead" if loop.error else "stopping", error=loop.error or None)
        return JSONResponse(body.model_dump(exclude_none=True), status_code=503)

    @app.get("/metrics", response_class=Response, responses={200: {"content": {METRICS_TYPE: {}}}})
    async def metrics() -> Response:
        return Response(loop.engine.metrics.render(), headers={"Content-Type": METRICS_TYPE})

    @app.api_route("/debug/faults", methods=["GET", "POST"], include_in_schema=False)
    async def faults(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(loop.engine.faults.config.to_dict())
        try:
            data = json.loads(await request.body())
            if not isinstance(data, dict):
                raise ApiError(400, "expected a JSON object of fault settings")
            config = FaultConfig.from_dict(data, loop.engine.faults.config)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"the body is not valid JSON: {exc}") from None
        except ConfigError as exc:
            raise ApiError(400, str(exc), exc.key) from None
        loop.set_faults(config)
        return JSONResponse(config.to_dict())


def make_app(serving: Serving, cfg: ServerConfig, template: ChatTemplate) -> FastAPI:
    """The application around one engine loop."""
    app = FastAPI(title="gpusleuth engine", version="1", description="OpenAI-compatible API of the bundled engine",
                  docs_url=None, redoc_url=None)
    metrics = serving.loop.engine.metrics

    def count(status: int) -> None:
        metrics.rejected.labels(_REJECTED.get(status, "bad_request" if status < 500 else "error")).inc()

    errors.install(app, count)
    _routes(app, serving, template)
    app.add_middleware(BodyGuard, max_body_bytes=cfg.max_body_bytes, read_timeout_s=cfg.read_timeout_s)
    return app
