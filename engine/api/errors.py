"""OpenAI-style error bodies for every failure the server answers: {"error": {message, type, param, code}}.

Validation errors (from the declared request models) name the field; Starlette's own 404/405/413 and anything
unexpected get the same shape, so no client ever parses plain text.
"""
from __future__ import annotations

import logging
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("gpusleuth.engine")

_TYPES = {400: "invalid_request_error", 404: "not_found_error", 405: "invalid_request_error",
          408: "timeout_error", 413: "invalid_request_error", 429: "rate_limit_error",
          500: "internal_server_error", 503: "service_unavailable"}


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int


class ErrorResponse(BaseModel):
    """What every non-2xx answer carries."""

    error: ErrorInfo


class ApiError(Exception):
    """An error answered with an OpenAI-style body; `param` names the request field to fix."""

    def __init__(self, status: int, message: str, param: str | None = None, err_type: str | None = None,
                 retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.err_type = err_type or _TYPES.get(status, "invalid_request_error")
        self.retry_after_s = retry_after_s

    def body(self) -> dict:
        return ErrorResponse(error=ErrorInfo(message=self.message, type=self.err_type, param=self.param,
                                             code=self.status)).model_dump()

    def response(self) -> JSONResponse:
        headers = {"Retry-After": str(self.retry_after_s)} if self.retry_after_s else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


# A documented error answer for the OpenAPI schema of each route.
ERROR_RESPONSES = {code: {"model": ErrorResponse} for code in (400, 404, 408, 413, 429, 500, 503)}


def validation_error(exc: RequestValidationError) -> ApiError:
    """The first validation error as a 400 naming its field (body.messages.0.content -> messages.0.content)."""
    errors = exc.errors()
    if not errors:
        return ApiError(400, "the request is not valid")
    first = errors[0]
    if first.get("type") == "json_invalid":
        return ApiError(400, "the body is not valid JSON: " + str(first.get("ctx", {}).get("error", "")))
    # field names and list indexes; pydantic also puts union members ("function-after[...]", "list[int]") there
    loc = [str(x) for x in first.get("loc", ())[1:] if isinstance(x, int) or ("[" not in x and "(" not in x)]
    param = ".".join(loc) or None
    if first.get("type") == "extra_forbidden":
        return ApiError(400, f"'{param}' is not supported by this server (unknown field)", param)
    if first.get("type") == "missing" and not loc:
        return ApiError(400, "the request needs a JSON object body")
    return ApiError(400, f"{param or 'body'}: {first.get('msg', 'is not valid')}", param)


def install(app: FastAPI, on_error: Callable[[int], None]) -> None:
    """Route every error the app can raise to an OpenAI-style body; `on_error(status)` counts each."""

    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        on_error(exc.status)
        return exc.response()

    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        on_error(400)
        return validation_error(exc).response()

    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 400 and "parsing the body" in detail:  # json.loads raised (digits, depth)
            detail = "the body could not be parsed as JSON (too deep, or a number too long)"
        err = ApiError(exc.status_code, detail)
        on_error(err.status)
        resp = err.response()
        for key, value in (exc.headers or {}).items():
            resp.headers[key] = value
        return resp

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error serving %s", request.url.path)
        on_error(500)
        return ApiError(500, f"internal error: {type(exc).__name__}").response()

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
