"""HTTP translation only: OpenAI-compatible routes, knowledge-base routes, health and metrics."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse

from .chat import ChatService, Reply
from .engines import Delta, SamplingParams
from .errors import BadRequest, ServiceError, Unauthorized
from .metrics import Metrics
from .protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    KongmingExtension,
    ModelList,
    Usage,
    completion_id,
)
from .settings import ServiceSettings, hash_key

router = APIRouter()


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


async def require_key(request: Request, settings: Annotated[ServiceSettings, Depends(get_settings)]) -> None:
    """Chat needs a key only when keys are configured."""
    digests = settings.key_digests()
    if not digests:
        return
    key = _bearer(request)
    if key is None or hash_key(key) not in digests:
        raise Unauthorized("Incorrect API key provided: send `Authorization: Bearer <key>`")


async def require_write_key(request: Request, settings: Annotated[ServiceSettings, Depends(get_settings)]) -> None:
    """Knowledge-base writes always need a key; with none configured they are off."""
    digests = settings.key_digests()
    if not digests:
        raise Unauthorized("knowledge-base writes are disabled: set KONGMING_API_KEYS and send one as a Bearer token")
    key = _bearer(request)
    if key is None or hash_key(key) not in digests:
        raise Unauthorized("Incorrect API key provided: send `Authorization: Bearer <key>`")


Chat = Annotated[ChatService, Depends(get_chat)]
Settings = Annotated[ServiceSettings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


@router.get("/health")
async def health(chat: Chat) -> dict[str, Any]:
    return {"status": "ok", "models": [m.id for m in chat.models()]}


@router.get("/metrics")
async def metrics(m: MetricsDep) -> Response:
    body, content_type = m.render()
    return Response(body, media_type=content_type)


@router.get("/v1/models", dependencies=[Depends(require_key)])
async def list_models(chat: Chat) -> ModelList:
    return ModelList(data=chat.models())


@router.get("/v1/models/{model_id}", dependencies=[Depends(require_key)])
async def get_model(model_id: str, chat: Chat) -> Any:
    chat.resolve_model(model_id)
    return next(m for m in chat.models() if m.id == model_id)


def _check(body: ChatCompletionRequest, settings: ServiceSettings) -> None:
    """Refusals for what the schema alone cannot say."""
    if not body.messages:
        raise BadRequest("messages must contain at least one message", param="messages")
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


@router.post("/v1/chat/completions", dependencies=[Depends(require_key)], response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, chat: Chat, settings: Settings, m: MetricsDep
) -> Response:
    _check(body, settings)
    started = time.perf_counter()
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
    ext = KongmingExtension(route=reply.route_info, citations=reply.citations, note=reply.note)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        stream = reply.stream()
        first = await _first(stream)  # errors before the first token are plain HTTP errors, not a broken stream
        sse = _sse(reply, body.model, ext, first, stream, include_usage, m, started)
        return StreamingResponse(sse, media_type="text/event-stream", headers=_headers(reply))
    done = await reply.complete()
    usage = Usage(
        prompt_tokens=done.prompt_tokens,
        completion_tokens=done.completion_tokens,
        total_tokens=done.prompt_tokens + done.completion_tokens,
    )
    m.observe_done(reply, usage.prompt_tokens, usage.completion_tokens, time.perf_counter() - started)
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
    reply: Reply,
    model: str,
    ext: KongmingExtension,
    first: Delta | None,
    stream: AsyncIterator[Delta],
    include_usage: bool,
    m: Metrics,
    started: float,
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
    m.observe_done(reply, prompt_tokens, completion_tokens, time.perf_counter() - started)


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

    upload_dir = (settings.data_dir / "uploads").resolve()
    upload_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for f in files:
        name = f.filename or ""
        if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
            raise BadRequest(f"refused file name {f.filename!r}: give a plain file name", param="files")
        target = (upload_dir / name).resolve()
        if target.parent != upload_dir:
            raise BadRequest(f"refused file name {f.filename!r}", param="files")
        tmp = target.with_name(f".{name}.part")
        with open(tmp, "wb") as out:
            while chunk := await f.read(1 << 20):
                out.write(chunk)
        tmp.replace(target)
        paths.append(target)
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
    return JSONResponse(exc.body(), status_code=exc.status)
