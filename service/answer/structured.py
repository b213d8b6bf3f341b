"""Tools and structured output for answerers that cannot call tools (the extractive answer, the in-process model):
refuse what they cannot honour, and give `response_format: json_object` an object with the answer and its sources."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

from ..engines import Completion, Delta, Engine, OpenAICompatibleEngine, SamplingParams
from ..errors import BadRequest
from ..protocol import Citation

UPSTREAM_HINT = "configure a model server that can (KONGMING_UPSTREAM_URL)"


def calls_tools(engine: Engine | None) -> bool:
    """Whether the engine passes tools and response formats to a model that honours them."""
    return isinstance(engine, OpenAICompatibleEngine)


def json_object_wanted(engine: Engine | None, params: SamplingParams) -> bool:
    """True when the answer must be wrapped as a JSON object here; a 400 for what cannot be honoured. Tools with
    tool_choice "auto"/"none" are answered with text (a model may choose not to call a tool)."""
    if calls_tools(engine):
        return False
    who = "the offline answerer" if engine is None else "the in-process model"
    if params.tool_choice not in (None, "none", "auto"):
        raise BadRequest(f"tool_choice: a forced tool call cannot be honoured: {who} calls no tools. Use tool_choice "
                         f"'auto' or 'none' (answered with text), or {UPSTREAM_HINT}", param="tool_choice")
    kind = (params.response_format or {}).get("type")
    if kind == "json_schema":
        raise BadRequest(f"response_format json_schema cannot be honoured by {who}: ask for {{'type': "
                         f"'json_object'}} (an object with the answer and its citations), or {UPSTREAM_HINT}",
                         param="response_format")
    return kind == "json_object"


def _sources(citations: list[Citation]) -> str:
    return json.dumps([c.model_dump() for c in citations], ensure_ascii=False)


def _escaped(text: str) -> str:
    """`text` as the inside of a JSON string (escaping is per character, so pieces can be escaped one by one)."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


def json_completion(done: Completion, citations: list[Citation]) -> Completion:
    done.text = f'{{"answer": "{_escaped(done.text)}", "citations": {_sources(citations)}}}'
    return done


async def json_stream(deltas: AsyncIterator[Delta], citations: Callable[[], list[Citation]]) -> AsyncIterator[Delta]:
    """The stream of `{"answer": "...", "citations": [...]}`: the answer's pieces escaped as they come."""
    opened = False
    async with aclosing(deltas):  # type: ignore[type-var]
        async for delta in deltas:  # the opening goes with the first piece: earlier errors stay plain HTTP errors
            text = ("" if opened else '{"answer": "') + _escaped(delta.text)
            opened = True
            if delta.finish_reason:
                yield Delta(text + f'", "citations": {_sources(citations())}}}', delta.finish_reason,
                            delta.prompt_tokens, delta.completion_tokens)
                return
            yield Delta(text)
