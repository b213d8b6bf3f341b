"""The app factory: settings -> knowledge base, engines, router -> FastAPI app with the API and the chat page."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ingest.errors import IngestError
from ingest.settings import IngestSettings

from .answer.chat import ChatService
from .answer.persona import Engines
from .answer.retrieval import KnowledgeBase
from .engines import Engine
from .errors import ServiceError, error_response
from .keys import KeyRing
from .metrics import Metrics
from .middleware import AccessLog, BodyLimit
from .ratelimit import RateLimiter
from .routes import api_router
from .settings import ServiceSettings, get_service_settings, ingest_settings_for

if TYPE_CHECKING:
    from finetune.jobs.worker import WorkerProcess


def build_chat_service(
    settings: ServiceSettings,
    ingest_settings: IngestSettings | None = None,
    engines: dict[str, Engine | None] | None = None,
    kb: KnowledgeBase | None = None,
) -> ChatService:
    kb = kb or KnowledgeBase(ingest_settings or ingest_settings_for(settings))
    return ChatService(settings, kb, Engines(settings, engines))


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


def _jobs_worker(settings: ServiceSettings) -> WorkerProcess | None:
    """The fine-tuning worker `kongming serve` runs beside the API (a separate process; training never runs in
    the service's event loop), unless workers run apart (finetune_worker=false)."""
    from finetune.jobs.worker import WorkerProcess

    return WorkerProcess(settings.data_dir) if settings.finetune_worker else None


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
    jobs_worker = _jobs_worker(settings)
    from .vector_stores import VectorStoreService

    # knowledge bases as OpenAI vector stores, over the chat's collections (the default one is "vs_<collection>")
    vector_stores = VectorStoreService(chat.kb.settings, settings.data_dir)
    chat.vector_stores = vector_stores
    # the chat's default knowledge base reads through the vector stores' retriever of its collection: it sees the
    # chunks and vectors the background ingest writes as they come (a retriever of its own reopened the store)
    chat.kb.open_with(lambda: vector_stores.retriever(chat.kb.settings.collection))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if jobs_worker is not None:
            await asyncio.to_thread(jobs_worker.start_if_jobs_wait)
        yield
        if jobs_worker is not None:
            await asyncio.to_thread(jobs_worker.stop)  # its job is queued again and resumes at the next start
        await chat.engines.aclose()
        chat.kb.close()
        vector_stores.close()

    app = FastAPI(title="kongming", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible chat over a knowledge base and a persona")
    app.state.settings = settings
    app.state.chat = chat
    app.state.metrics = metrics
    app.state.keys = KeyRing(settings)
    app.state.limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
    app.state.jobs_worker = jobs_worker
    app.state.vector_stores = vector_stores
    app.include_router(api_router)
    _openapi_without_422(app)

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        """Every error, whatever raised it, through errors.error_response; the id is the one the service assigned."""
        rid = getattr(request.state, "request_id", "")
        return error_response(exc, rid, count=lambda kind: metrics.errors.labels(type=kind).inc())

    for handled in (ServiceError, IngestError, RequestValidationError, HTTPException, Exception):
        app.add_exception_handler(handled, on_error)

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["*"])
    files_limit = settings.max_file_bytes + 1_000_000  # + the multipart framing; the route checks the file itself
    with_ui = settings.ui if ui is None else ui
    # the page's uploads (documents into a knowledge base, fine-tuning data) take the Files API's limit
    page_uploads = {"/ui/gradio_api/upload": files_limit} if with_ui else {}  # service.ui.PATH + Gradio's route
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes, upload_limit=settings.max_upload_bytes,
                       metrics=metrics, prefix_limits={"/v1/files": files_limit, **page_uploads})
    app.add_middleware(AccessLog, metrics=metrics)
    if with_ui:
        from fastapi.responses import RedirectResponse

        from .ui import mount_ui

        @app.get("/", include_in_schema=False)
        async def root() -> RedirectResponse:  # the address a person types opens the page
            return RedirectResponse("/ui/")

        app = mount_ui(app, chat)
    return app
