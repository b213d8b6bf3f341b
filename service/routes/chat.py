"""POST /v1/chat/completions: the checked request -> ChatService.reply -> a completion or an SSE chunk stream."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from ..answer.chat import Reply
from ..answer.sources import appended_sources
from ..engines import Delta
from ..errors import ServiceError, error_body
from ..metrics import Metrics
from ..protocol import AssistantMessage, ChatCompletion, Choice, KongmingExtension, Usage, completion_id
from .deps import Chat, ChatRequest, Key, MetricsDep

router = APIRouter(tags=["chat"])

CHAT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": ChatCompletion, "description": "a completion, or with `stream` a text/event-stream of chunks",
          "content": {"text/event-stream": {"schema": {  # one server-sent event
              "type": "object", "required": ["data"],
              "properties": {"event": {"type": "string"},
                             "data": {"type": "string", "description": "a chat.completion.chunk in JSON, or [DONE]"}},
          }}}},
}  # fmt: skip


@router.post("/v1/chat/completions", dependencies=[Key], response_model=None, responses=CHAT_RESPONSES)
async def chat_completions(body: ChatRequest, request: Request, chat: Chat, m: MetricsDep) -> Response:
    started = time.perf_counter()

    def record(prompt_tokens: int, completion_tokens: int) -> None:
        m.observe_done(reply, prompt_tokens, completion_tokens, time.perf_counter() - started)
        request.state.tokens = (prompt_tokens, completion_tokens)  # for the access log

    reply = await chat.reply(
        body.conversation(), body.model, body.to_sampling_params(), body.kongming, max_tokens=body.max_new_tokens
    )
    reply.append_sources = appended_sources(body.kongming, request.headers, chat.settings.append_sources,
                                            body.conversation())
    m.observe_reply(reply)
    if body.stream:
        stream = reply.stream()
        first = await _first(stream)  # errors before the first token are plain HTTP errors, not a broken stream
        m.first_token.labels(route=reply.decision.route).observe(time.perf_counter() - started)
        # built after the first token: a RAG answer whose model server failed falls back to extraction by then
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        sse = _sse(body.model, _extension(reply), first, stream, include_usage, m, record)
        return StreamingResponse(sse, media_type="text/event-stream", headers=_headers(reply))
    done = await reply.complete()
    usage = Usage(prompt_tokens=done.prompt_tokens, completion_tokens=done.completion_tokens,
                  total_tokens=done.prompt_tokens + done.completion_tokens)
    record(usage.prompt_tokens, usage.completion_tokens)
    content = done.text if done.text or not done.tool_calls else None  # a tool call's content is null, as OpenAI's
    choice = Choice(message=AssistantMessage(content=content, tool_calls=done.tool_calls),
                    finish_reason=done.finish_reason)
    out = ChatCompletion(model=body.model, choices=[choice], usage=usage, kongming=_extension(reply))
    return Response(out.model_dump_json(), media_type="application/json", headers=_headers(reply))


def _extension(reply: Reply) -> KongmingExtension:
    return KongmingExtension(route=reply.route_info, citations=reply.citations, note=reply.note)


def _headers(reply: Reply) -> dict[str, str]:
    cites = [{"n": c.index, "doc": c.doc_id, "chapter": c.chapter, "score": c.score} for c in reply.citations]
    return {
        "x-kongming-route": reply.decision.route,
        "x-kongming-route-forced": str(reply.decision.forced).lower(),
        "x-kongming-citations": json.dumps(cites, separators=(",", ":")),
    }


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
    """OpenAI's chunk stream: every chunk has one choice; the one carrying finish_reason also carries the route and
    citations (`kongming`). Only with include_usage: `"usage": null` on each chunk, then one last chunk with no
    choices and the usage, as OpenAI sends."""
    cid = completion_id()
    head = (
        f'data: {{"id":"{cid}","object":"chat.completion.chunk","created":{int(time.time())},'
        f'"model":{json.dumps(model)},"choices":[{{"index":0,"delta":'
    ).encode()
    tail = b"}]" + (b',"usage":null' if include_usage else b"") + b"}\n\n"
    prompt_tokens = completion_tokens = 0
    finish = "stop"
    yield head + b'{"role":"assistant","content":""},"finish_reason":null' + tail
    async with aclosing(stream):  # type: ignore[type-var]
        try:
            delta = first
            while delta is not None:
                if delta.text:
                    yield head + b'{"content":' + json.dumps(delta.text).encode() + b'},"finish_reason":null' + tail
                if delta.tool_calls:  # the model server's tool-call pieces, as it sent them
                    calls = json.dumps({"tool_calls": delta.tool_calls}, ensure_ascii=False).encode()
                    yield head + calls + b',"finish_reason":null' + tail
                if delta.finish_reason:
                    finish = delta.finish_reason
                    prompt_tokens = delta.prompt_tokens or prompt_tokens
                    completion_tokens = delta.completion_tokens or completion_tokens
                delta = await anext(stream, None)
        except ServiceError as exc:  # the upstream broke mid-stream: a clean error event, then the end
            m.errors.labels(type=exc.type).inc()
            yield b"data: " + error_body(exc)[1].model_dump_json().encode() + b"\n\n"
            yield b"data: [DONE]\n\n"
            return
    chunk: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
        "kongming": ext.model_dump(),
    }
    if include_usage:
        chunk["usage"] = None
    yield b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"
    if include_usage:
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        chunk.update(choices=[], usage=usage)
        del chunk["kongming"]
        yield b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"
    done(prompt_tokens, completion_tokens)
