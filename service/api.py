"""HTTP translation only: OpenAI-compatible routes, knowledge-base routes, health and metrics."""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from .chat import ChatService, Reply
from .engines import Delta, SamplingParams
from .errors import BadRequest, RateLimited, ServiceError, Unauthorized
from .keys import KeyRing
from .metrics import Metrics
from .protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    ErrorResponse,
    KongmingExtension,
    ModelCard,
    ModelList,
    Usage,
    completion_id,
)
from .ratelimit import RateLimiter
from .settings import ServiceSettings
from .uploads import save_upload, upload_target

# Every error the API returns is OpenAI-shaped; the schema says so (the fuzz test checks responses against it).
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": what}
    for status, what in [
        (400, "malformed request"), (401, "missing or wrong API key"), (404, "unknown model, route or document"),
        (413, "body too large"), (429, "rate limit reached (see Retry-After)"), (500, "internal error"),
        (502, "the model server failed"), (503, "the model server is unavailable"), (504, "the model server timed out"),
    ]
}  # fmt: skip
router = APIRouter(responses=ERRORS)


# The dependencies are `async def` although they do no I/O: FastAPI runs a plain `def` dependency on a worker
# thread, and those four hops were ~0.4 ms of the ~2 ms CPU a proxied chat request cost (bench/service_bench.py).
async def get_chat(request: Request) -> ChatService:
    return request.app.state.chat


async def get_settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


WRONG_KEY = "Incorrect API key provided: send `Authorization: Bearer <key>`"


async def require_key(request: Request, settings: Annotated[ServiceSettings, Depends(get_settings)]) -> None:
    """Chat and reads need a key when keys are configured (`chat_auth` auto), always (required) or never (open)."""
    ring: KeyRing = request.app.state.keys
    key_id = ring.identify(_bearer(request))
    needed = settings.chat_auth == "required" or (settings.chat_auth == "auto" and ring.configured())
    if needed and key_id is None:
        raise Unauthorized(WRONG_KEY)
    _admit(request, settings, key_id)


async def require_write_key(request: Request, settings: Annotated[ServiceSettings, Depends(get_settings)]) -> None:
    """Knowledge-base writes always need a key, even when chat is open; with none configured they are off."""
    ring: KeyRing = request.app.state.keys
    if not ring.configured():
        raise Unauthorized("knowledge-base writes are disabled: create a key with `kongming keys add` (or set "
                           "KONGMING_API_KEYS) and send it as a Bearer token")
    key_id = ring.identify(_bearer(request))
    if key_id is None:
        raise Unauthorized(WRONG_KEY)
    _admit(request, settings, key_id)


def _admit(request: Request, settings: ServiceSettings, key_id: str | None) -> None:
    """Per-caller token bucket: the key's id, or the client's address for requests without a key."""
    request.state.key_id = key_id  # the access log names the key by id, never by value
    limiter: RateLimiter = request.app.state.limiter
    caller = key_id or "addr:" + (request.client.host if request.client else "-")
    wait = limiter.take(caller)
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        raise RateLimited(
            f"Rate limit reached: {settings.rate_limit_per_minute:g} requests per minute"
            f" (bursts of {settings.rate_limit_burst}); retry in {seconds} s",
            headers={"retry-after": str(seconds)},
        )


Chat = Annotated[ChatService, Depends(get_chat)]
Settings = Annotated[ServiceSettings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


@router.get("/health")
async def health(chat: Chat) -> dict[str, Any]:
    return {"status": "ok", "models": [m.id for m in chat.models()]}


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(m: MetricsDep) -> Response:
    body, content_type = m.render()
    return Response(body, media_type=content_type)


@router.get("/v1/models", dependencies=[Depends(require_key)])
async def list_models(chat: Chat) -> ModelList:
    return ModelList(data=chat.models())


@router.get("/v1/models/{model_id}", dependencies=[Depends(require_key)], response_model=ModelCard)
async def get_model(model_id: str, chat: Chat) -> Any:
    chat.resolve_model(model_id)
    return next(m for m in chat.models() if m.id == model_id)


def _check(body: ChatCompletionRequest, settings: ServiceSettings) -> None:
    """Refusals for what the schema alone cannot say."""
    if not body.messages:
        raise BadRequest("messages must contain at least one message", param="messages")
    if len(body.messages) > settings.max_messages:  # refused before anything reads the conversation
        raise BadRequest(f"too many messages: {len(body.messages)} > {settings.max_messages}", param="messages")
    if body.n is not None and body.n > 1:
        raise BadRequest("n > 1 is not supported: ask for one choice", param="n")
    if body.tools:
        raise BadRequest("tools are not supported by this service", param="tools")
    if body.logprobs:
        raise BadRequest("logprobs are not supported by this service", param="logprobs")
    if body.response_format and body.response_format.get("type") not in (None, "text"):
        raise BadRequest("only response_format {'type': 'text'} is supported", param="response_format")
    limit = body.max_completion_tokens or body.max_tokens
    if limit is not None and limit > settings.max_tokens_cap:
        raise BadRequest(
            f"max_tokens is too large: {limit}. This service allows at most {settings.max_tokens_cap}",
            param="max_tokens",
        )


def _headers(reply: Reply) -> dict[str, str]:
    cites = [{"n": c.index, "doc": c.doc_id, "chapter": c.chapter, "score": c.score} for c in reply.citations]
    return {
        "x-kongming-route": reply.decision.route,
        "x-kongming-route-forced": str(reply.decision.forced).lower(),
        "x-kongming-citations": json.dumps(cites, separators=(",", ":")),
    }


CHAT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": ChatCompletion, "description": "a completion, or with `stream` a text/event-stream of chunks",
          "content": {"text/event-stream": {"schema": {  # one server-sent event
              "type": "object", "required": ["data"],
              "properties": {"event": {"type": "string"},
                             "data": {"type": "string", "description": "a chat.completion.chunk in JSON, or [DONE]"}},
          }}}},
}


@router.post("/v1/chat/completions", dependencies=[Depends(require_key)], response_model=None,
             responses=CHAT_RESPONSES)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, chat: Chat, settings: Settings, m: MetricsDep
) -> Response:
    _check(body, settings)
    started = time.perf_counter()

    def record(prompt_tokens: int, completion_tokens: int) -> None:
        m.observe_done(reply, prompt_tokens, completion_tokens, time.perf_counter() - started)
        request.state.tokens = (prompt_tokens, completion_tokens)  # for the access log

    messages = [{"role": "system" if x.role == "developer" else x.role, "content": x.text()} for x in body.messages]
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    params = SamplingParams(
        temperature=0.7 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        stop=stop,
        seed=body.seed,
    )
    reply = await chat.reply(
        messages, body.model, params, body.kongming, max_tokens=body.max_completion_tokens or body.max_tokens
    )
    m.observe_reply(reply)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        stream = reply.stream()
        first = await _first(stream)  # errors before the first token are plain HTTP errors, not a broken stream
        m.first_token.labels(route=reply.decision.route).observe(time.perf_counter() - started)
        # built after the first token: a RAG answer whose model server failed falls back to extraction by then
        ext = KongmingExtension(route=reply.route_info, citations=reply.citations, note=reply.note)
        sse = _sse(body.model, ext, first, stream, include_usage, m, record)
        return StreamingResponse(sse, media_type="text/event-stream", headers=_headers(reply))
    done = await reply.complete()
    usage = Usage(
        prompt_tokens=done.prompt_tokens,
        completion_tokens=done.completion_tokens,
        total_tokens=done.prompt_tokens + done.completion_tokens,
    )
    record(usage.prompt_tokens, usage.completion_tokens)
    ext = KongmingExtension(route=reply.route_info, citations=reply.citations, note=reply.note)
    out = ChatCompletion(
        model=body.model,
        choices=[Choice(message=AssistantMessage(content=done.text), finish_reason=done.finish_reason)],
        usage=usage,
        kongming=ext,
    )
    return Response(out.model_dump_json(), media_type="application/json", headers=_headers(reply))


async def _first(stream: AsyncIterator[Delta]) -> Delta | None:
    try:
        return await anext(stream)
    except StopAsyncIteration:
        return None
    except BaseException:
        await stream.aclose()  # type: ignore[attr-defined]
        raise


async def _sse(
    model: str,
    ext: KongmingExtension,
    first: Delta | None,
    stream: AsyncIterator[Delta],
    include_usage: bool,
    m: Metrics,
    done: Callable[[int, int], None],
) -> AsyncIterator[bytes]:
    """OpenAI's chunk stream; the route and citations come in a last chunk (no choices) before [DONE]."""
    cid = completion_id()
    head = (
        f'data: {{"id":"{cid}","object":"chat.completion.chunk","created":{int(time.time())},'
        f'"model":{json.dumps(model)},"choices":[{{"index":0,"delta":'
    ).encode()
    tail = b"}]}\n\n"
    prompt_tokens = completion_tokens = 0
    finish = "stop"
    yield head + b'{"role":"assistant","content":""},"finish_reason":null' + tail
    async with aclosing(stream):  # type: ignore[type-var]
        try:
            delta = first
            while delta is not None:
                if delta.text:
                    yield head + b'{"content":' + json.dumps(delta.text).encode() + b'},"finish_reason":null' + tail
                if delta.finish_reason:
                    finish = delta.finish_reason
                    prompt_tokens = delta.prompt_tokens or prompt_tokens
                    completion_tokens = delta.completion_tokens or completion_tokens
                delta = await anext(stream, None)
        except ServiceError as exc:  # the upstream broke mid-stream: a clean error event, then the end
            m.errors.labels(type=exc.type).inc()
            yield b"data: " + json.dumps(exc.body()).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"
            return
    yield head + b"{}," + f'"finish_reason":{json.dumps(finish)}'.encode() + tail
    last: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [],
        "kongming": ext.model_dump(),
    }
    if include_usage:
        last["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
    yield b"data: " + json.dumps(last, ensure_ascii=False).encode() + b"\n\ndata: [DONE]\n\n"
    done(prompt_tokens, completion_tokens)


# -- knowledge base (writes need an API key) ---------------------------------------------------------------------


@router.get("/v1/kb/documents", dependencies=[Depends(require_key)])
async def kb_list(chat: Chat) -> dict[str, Any]:
    from ingest.pipeline import list_documents

    docs = await chat.kb.run(list_documents, chat.kb.settings)
    return {"object": "list", "data": [_doc(d) for d in docs]}


def _doc(d: Any) -> dict[str, Any]:
    return {"id": d.doc_id, "source": d.source, "title": d.title, "chunks": d.n_chunks, "status": d.status,
            "chars": d.chars}


@router.post("/v1/kb/documents", dependencies=[Depends(require_write_key)])
async def kb_upload(chat: Chat, settings: Settings, files: Annotated[list[UploadFile], File()]) -> dict[str, Any]:
    from ingest.pipeline import add_paths

    for f in files:  # every name is checked before any file is written
        upload_target(settings.upload_dir(), f.filename)
    paths = [await save_upload(settings.upload_dir(), f) for f in files]
    summary = await chat.kb.run(add_paths, paths, chat.kb.settings)
    return {
        "added": summary.added_docs,
        "changed": summary.updated_docs,
        "unchanged": summary.unchanged,
        "chunks_added": summary.chunks_added,
        "failed": [{"file": Path(p.path).name, "reason": p.reason} for p in summary.failed],
    }


@router.delete("/v1/kb/documents/{doc_id}", dependencies=[Depends(require_write_key)])
async def kb_remove(doc_id: str, chat: Chat) -> dict[str, Any]:
    from ingest.errors import UnknownDocumentError
    from ingest.pipeline import remove_documents

    from .errors import NotFound

    try:
        summary = await chat.kb.run(remove_documents, [doc_id], chat.kb.settings)
    except UnknownDocumentError as exc:
        raise NotFound(str(exc), param="doc_id", code="document_not_found") from exc
    return {"id": doc_id, "deleted": True, "chunks_removed": summary.chunks_removed}


def error_response(exc: ServiceError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)
