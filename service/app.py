"""The app factory: settings -> knowledge base, engines, router -> FastAPI app with the API and the chat page."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest.settings import IngestSettings

from .api import error_response, router
from .chat import ChatService
from .engines import Engine
from .errors import PayloadTooLarge, ServiceError
from .keys import KeyRing
from .metrics import Metrics
from .persona import Engines
from .ratelimit import RateLimiter
from .retrieval import KnowledgeBase
from .settings import ServiceSettings, get_service_settings, ingest_settings_for

log = logging.getLogger("kongming.access")


def build_chat_service(
    settings: ServiceSettings,
    ingest_settings: IngestSettings | None = None,
    engines: dict[str, Engine | None] | None = None,
    kb: KnowledgeBase | None = None,
) -> ChatService:
    kb = kb or KnowledgeBase(ingest_settings or ingest_settings_for(settings))
    return ChatService(settings, kb, Engines(settings, engines))


class BodyLimit:
    """Refuses request bodies over the limit (413) before they are read into memory; knowledge-base uploads
    have their own (larger) limit."""

    def __init__(
        self, app: ASGIApp, limit: int, upload_limit: int | None = None, upload_prefix: str = "/v1/kb/",
        metrics: Metrics | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.limit = limit
        self.upload_limit = upload_limit or limit
        self.upload_prefix = upload_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.upload_limit if scope["path"].startswith(self.upload_prefix) else self.limit
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_big = PayloadTooLarge(f"request body too large: the limit is {limit} bytes")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            self._count(too_big)
            await error_response(too_big)(scope, receive, send)
            return
        seen = 0
        tripped = False

        async def limited() -> Message:
            nonlocal seen, tripped
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    tripped = True
                    raise _TooLarge()
            return message

        async def guarded(message: Message) -> None:
            if not tripped:  # whatever the app answers to a body it could not finish reading is replaced by the 413
                await send(message)

        try:
            await self.app(scope, limited, guarded)
        except _TooLarge:
            pass
        if tripped:
            self._count(too_big)
            await error_response(too_big)(scope, receive, send)

    def _count(self, exc: ServiceError) -> None:
        if self.metrics is not None:
            self.metrics.errors.labels(type=exc.type).inc()


class _TooLarge(Exception):
    pass


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_RID_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def _request_id(given: bytes | None) -> bytes:
    """The client's `x-request-id` when it is a plain token (it goes into logs and headers), else a new one."""
    if given and len(given) <= 64 and all(c in _RID_CHARS for c in given):
        return given
    return uuid.uuid4().hex[:16].encode()


class AccessLog:
    """Request id (kept from `x-request-id` or made), one structured log line, a counter and a latency
    observation per request. Plain ASGI, so streamed responses pass through untouched; the line is written when
    the last byte has gone, with the token counts the route recorded in `request.state`."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = _request_id(headers.get(b"x-request-id"))
        scope.setdefault("state", {})["request_id"] = rid.decode()
        started = time.perf_counter()
        status = 500
        route = b"-"

        async def send_with_id(message: Message) -> None:
            nonlocal status, route
            if message["type"] == "http.response.start":
                status = message["status"]
                out = list(message.get("headers") or [])
                route = next((v for k, v in out if k == b"x-kongming-route"), b"-")
                out.append((b"x-request-id", rid))
                message = {**message, "headers": out}
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.metrics.in_flight.dec()
            seconds = time.perf_counter() - started
            path = getattr(scope.get("route"), "path", "unmatched")  # the route template: bounded label values
            method = scope["method"] if scope["method"] in _METHODS else "other"  # bounded label values
            self.metrics.requests.labels(method=method, path=path, status=str(status)).inc()
            self.metrics.request_latency.labels(method=method, path=path).observe(seconds)
            state = scope.get("state") or {}
            fields: dict[str, Any] = {
                "request_id": rid.decode(), "method": method, "path": scope["path"], "route_path": path,
                "status": status, "route": route.decode("latin-1"), "ms": round(seconds * 1000, 1),
                "key_id": state.get("key_id"),
            }  # fmt: skip
            if "tokens" in state:
                fields["prompt_tokens"], fields["completion_tokens"] = state["tokens"]
            log.info("%s %s %d", method, scope["path"], status, extra={"fields": fields})


def _openapi_without_422(app: FastAPI) -> None:
    """Invalid requests are answered 400 in OpenAI's shape (below), not FastAPI's 422: the schema says so."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        for ops in schema.get("paths", {}).values():
            for op in ops.values():
                op.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(
    settings: ServiceSettings | None = None,
    *,
    ingest_settings: IngestSettings | None = None,
    chat: ChatService | None = None,
    ui: bool | None = None,
) -> FastAPI:
    settings = settings or get_service_settings()
    chat = chat or build_chat_service(settings, ingest_settings)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await chat.engines.aclose()
        chat.kb.close()

    app = FastAPI(title="kongming", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible chat over a knowledge base and a persona")
    app.state.settings = settings
    app.state.chat = chat
    app.state.metrics = metrics
    app.state.keys = KeyRing(settings)
    app.state.limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
    app.include_router(router)
    _openapi_without_422(app)

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        metrics.errors.labels(type=exc.type).inc()
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first: dict[str, Any] = errors[0] if errors else {}
        if first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
            first = {**first, "msg": "a JSON body is required"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        if first.get("type") == "json_invalid":
            message = "the request body is not valid JSON: " + str(first.get("ctx", {}).get("error", "parse error"))
        elif first.get("type") == "extra_forbidden":
            message = f"Unrecognized request argument supplied: {param}"
        else:
            message = f"{param or 'body'}: {first.get('msg', 'invalid value')}"
        metrics.errors.labels(type="invalid_request_error").inc()
        body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}
        return JSONResponse(body, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        metrics.errors.labels(type=kind).inc()
        body = {"error": {"message": str(exc.detail), "type": kind, "param": None, "code": None}}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = request.headers.get("x-request-id", "")
        log.exception("unhandled error in %s %s (request %s)", request.method, request.url.path, rid)
        metrics.errors.labels(type="internal_error").inc()
        body = {"error": {"message": f"internal error (request id {rid})", "type": "internal_error",
                          "param": None, "code": None}}
        return JSONResponse(body, status_code=500)

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["*"])
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes, upload_limit=settings.max_upload_bytes,
                       metrics=metrics)
    app.add_middleware(AccessLog, metrics=metrics)
    if settings.ui if ui is None else ui:
        from .ui import mount_ui

        app = mount_ui(app, chat)
    return app
