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
from .metrics import Metrics
from .persona import Engines
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
    """Refuses request bodies over the limit (413) before they are read into memory."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_big = PayloadTooLarge(f"request body too large: the limit is {self.limit} bytes")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await error_response(too_big)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await error_response(too_big)(scope, receive, send)


class _TooLarge(Exception):
    pass


class AccessLog:
    """Request id (kept from `x-request-id` or made), one log line and a counter per request. Plain ASGI, so
    streamed responses pass through untouched."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = (headers.get(b"x-request-id") or uuid.uuid4().hex[:16].encode())[:64]
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

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            matched = scope.get("route")
            path = getattr(matched, "path", "unmatched")
            self.metrics.requests.labels(method=scope["method"], path=path, status=str(status)).inc()
            log.info("request_id=%s method=%s path=%s status=%d route=%s ms=%.1f", rid.decode("latin-1"),
                     scope["method"], scope["path"], status, route.decode(), (time.perf_counter() - started) * 1000)


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
    app.include_router(router)

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        metrics.errors.labels(type=exc.type).inc()
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first: dict[str, Any] = errors[0] if errors else {}
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
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    app.add_middleware(AccessLog, metrics=metrics)
    if settings.ui if ui is None else ui:
        from .ui import mount_ui

        app = mount_ui(app, chat)
    return app
