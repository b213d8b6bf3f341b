"""The one interface every text generator implements: chat completion, whole or streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}


@dataclass
class SamplingParams:
    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass
class Completion:
    text: str
    finish_reason: str = "stop"  # "stop" | "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Delta:
    """One piece of a streamed completion. The last one carries finish_reason and the token counts."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@runtime_checkable
class Engine(Protocol):
    """Generates chat completions. `name` is the model name reported to clients."""

    name: str

    async def generate(self, messages: list[Message], params: SamplingParams) -> Completion: ...

    def stream(self, messages: list[Message], params: SamplingParams) -> AsyncIterator[Delta]: ...
