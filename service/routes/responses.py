"""POST /v1/responses: the Responses API (text) over the same answerers as chat -> a Response or its event stream."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError

from ..answer.chat import Reply
from ..answer.sources import appended_sources
from ..engines import Delta
from ..errors import ServiceError, error_body, validation_error
from ..metrics import Metrics
from ..protocol import KongmingExtension
from ..responses import (
    FileSearchCall,
    OutputMessage,
    OutputText,
    ResponseObject,
    ResponsesRequest,
    ResponseUsage,
    finished,
    message_id,
)
from .chat import _first, _headers
from .deps import Chat, Key, MetricsDep, Settings
from .file_search import file_search_call, file_search_options, search_events

router = APIRouter(tags=["responses"])

RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": ResponseObject, "description": "a response, or with `stream` a text/event-stream of its events",
          "content": {"text/event-stream": {"schema": {
              "type": "object", "required": ["data"],
              "properties": {"event": {"type": "string"},
                             "data": {"type": "string", "description": "a Responses stream event in JSON"}},
          }}}},
}  # fmt: skip


async def checked_request(body: ResponsesRequest, settings: Settings) -> ResponsesRequest:
    try:
        body.check_limits(settings.max_messages, settings.max_tokens_cap)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from exc
    return body


Body = Annotated[ResponsesRequest, Depends(checked_request)]


@router.post("/v1/responses", dependencies=[Key], response_model=None, responses=RESPONSES)
async def create_response(body: Body, request: Request, chat: Chat, m: MetricsDep) -> Response:
    started = time.perf_counter()

    def record(prompt_tokens: int, completion_tokens: int) -> None:
        m.observe_done(reply, prompt_tokens, completion_tokens, time.perf_counter() - started)
        request.state.tokens = (prompt_tokens, completion_tokens)  # for the access log

    messages = body.conversation_messages()
    sources = appended_sources(body.kongming, request.headers, chat.settings.append_sources, messages)
    stores, options = file_search_options(body)
    reply = await chat.reply(messages, body.model, body.to_sampling_params(), options,
                             max_tokens=body.max_output_tokens)
    search = await file_search_call(chat, stores, body, messages, reply)
    reply.append_sources = sources
    m.observe_reply(reply)
    start = ResponseObject.started(body)
    if body.stream:
        stream = reply.stream()
        first = await _first(stream)  # errors before the first token are plain HTTP errors, not a broken stream
        m.first_token.labels(route=reply.decision.route).observe(time.perf_counter() - started)
        events = _events(start, reply, first, stream, m, record, search)
        return StreamingResponse(events, media_type="text/event-stream", headers=_headers(reply))
    done = await reply.complete()
    record(done.prompt_tokens, done.completion_tokens)
    usage = ResponseUsage.of(done.prompt_tokens, done.completion_tokens)
    out = finished(start, message_id(), done.text, done.finish_reason, usage, _extension(reply), search)
    return Response(out.model_dump_json(), media_type="application/json", headers=_headers(reply))


def _extension(reply: Reply) -> KongmingExtension:
    return KongmingExtension(route=reply.route_info, citations=reply.citations, note=reply.note)


class _Events:
    """Server-sent events of one response, numbered in order (`sequence_number`)."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, kind: str, **fields: Any) -> bytes:
        event = {"type": kind, "sequence_number": self.n, **fields}
        self.n += 1
        return f"event: {kind}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n".encode()


async def _events(
    start: ResponseObject,
    reply: Reply,
    first: Delta | None,
    stream: AsyncIterator[Delta],
    m: Metrics,
    done: Callable[[int, int], None],
    search: FileSearchCall | None = None,
) -> AsyncIterator[bytes]:
    """created, in_progress, (the file_search_call item's events,) output_item.added, content_part.added,
    output_text.delta…, output_text.done, content_part.done, output_item.done, then completed (or incomplete when
    max_output_tokens cut it)."""
    event, item_id = _Events(), message_id()
    index = 1 if search else 0
    where = {"item_id": item_id, "output_index": index, "content_index": 0}
    yield event("response.created", response=start.model_dump(mode="json"))
    yield event("response.in_progress", response=start.model_dump(mode="json"))
    for sent in search_events(event, search) if search else ():
        yield sent
    item = OutputMessage(id=item_id, status="in_progress")
    yield event("response.output_item.added", output_index=index, item=item.model_dump(mode="json"))
    yield event("response.content_part.added", **where, part=OutputText(text="").model_dump(mode="json"))
    text: list[str] = []
    prompt_tokens = completion_tokens = 0
    finish = "stop"
    async with aclosing(stream):  # type: ignore[type-var]
        try:
            delta = first
            while delta is not None:
                if delta.text:
                    text.append(delta.text)
                    yield event("response.output_text.delta", **where, delta=delta.text, logprobs=[])
                if delta.finish_reason:
                    finish = delta.finish_reason
                    prompt_tokens = delta.prompt_tokens or prompt_tokens
                    completion_tokens = delta.completion_tokens or completion_tokens
                delta = await anext(stream, None)
        except ServiceError as exc:  # the upstream broke mid-stream: an error event, then the failed response
            m.errors.labels(type=exc.type).inc()
            err = error_body(exc)[1].error
            yield event("error", code=err.code, message=err.message, param=err.param)
            failed = start.model_copy(update={"status": "failed", "error": {"code": err.code, "message": err.message}})
            yield event("response.failed", response=failed.model_dump(mode="json"))
            return
    usage = ResponseUsage.of(prompt_tokens, completion_tokens)
    out = finished(start, item_id, "".join(text), finish, usage, _extension(reply), search)
    msg = out.output[-1]
    assert isinstance(msg, OutputMessage)
    yield event("response.output_text.done", **where, text=msg.content[0].text, logprobs=[])
    yield event("response.content_part.done", **where, part=msg.content[0].model_dump(mode="json"))
    yield event("response.output_item.done", output_index=index, item=msg.model_dump(mode="json"))
    kind = "response.completed" if out.status == "completed" else "response.incomplete"
    yield event(kind, response=out.model_dump(mode="json"))
    done(prompt_tokens, completion_tokens)
