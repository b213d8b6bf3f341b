"""The one interface every text generator implements: chat completion, whole or streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

# {"role": "system"|"user"|"assistant"|"tool", "content": "..."}, plus OpenAI's "tool_calls" / "tool_call_id"
Message = dict[str, Any]


def text_turns(messages: Sequence[Message]) -> list[Message]:
    """The system/user/assistant text of a conversation, for a model that takes no tools (tool results and
    calls left out)."""
    return [{"role": m["role"], "content": m.get("content") or ""} for m in messages
            if m["role"] in ("system", "user", "assistant")]


@dataclass
class SamplingParams:
    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    # Repetition controls (None: the model's own decoding). repetition_penalty > 1 divides the score of every token
    # already in the prompt or the answer (transformers' and vLLM's meaning); no_repeat_ngram_size n bans any n-token
    # sequence a second time (in process only: vLLM has no such parameter).
    repetition_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    # OpenAI's (vLLM's too): minus this x the times (frequency), or once if at all (presence), a token is in the answer
    # so far; the prompt's tokens do not count
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    # a reply to a Chinese conversation says no token of another script (Latin letters, kana...: a small multilingual
    # model samples code identifiers into Chinese answers otherwise); service/engines/script.py
    keep_script: bool | None = None
    # passed to a model that can honour them (the upstream one); ChatService.reply refuses or adapts them otherwise
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None


@dataclass
class Completion:
    text: str
    finish_reason: str = "stop"  # "stop" | "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tool_calls: list[dict[str, Any]] | None = None  # OpenAI's shape, as the model server sent them


@dataclass
class Delta:
    """One piece of a streamed completion. The last one carries finish_reason and the token counts."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tool_calls: list[dict[str, Any]] | None = None  # OpenAI's streamed tool-call pieces (index, id, function)


@runtime_checkable
class Engine(Protocol):
    """Generates chat completions. `name` is the model name reported to clients."""

    name: str

    async def generate(self, messages: list[Message], params: SamplingParams) -> Completion: ...

    def stream(self, messages: list[Message], params: SamplingParams) -> AsyncIterator[Delta]: ...
