"""A queued-reply engine: a real implementation of the Engine Protocol that answers from a queue."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

from service.engines import Completion, Delta, Message, SamplingParams


class QueuedEngine:
    """Answers each request with the next queued reply (or an echo of the last user message when the queue is
    empty), streamed in small pieces. Records the prompts it was given."""

    def __init__(self, name: str = "queued", replies: list[str] | None = None, piece: int = 3,
                 delay: float = 0.0) -> None:
        self.name = name
        self.replies: deque[str] = deque(replies or [])
        self.piece = piece
        self.delay = delay
        self.calls: list[list[Message]] = []
        self.cancelled = 0

    def _next(self, messages: list[Message]) -> str:
        self.calls.append([dict(m) for m in messages])
        return self.replies.popleft() if self.replies else "echo: " + messages[-1]["content"][-40:]

    async def generate(self, messages: list[Message], params: SamplingParams) -> Completion:
        text = self._next(messages)[: params.max_tokens * 4]
        return Completion(text, "stop", sum(len(m["content"]) for m in messages), len(text))

    async def stream(self, messages: list[Message], params: SamplingParams) -> AsyncIterator[Delta]:
        text = self._next(messages)[: params.max_tokens * 4]
        try:
            for i in range(0, len(text), self.piece):
                if self.delay:
                    await asyncio.sleep(self.delay)
                yield Delta(text[i : i + self.piece])
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise
        yield Delta("", "stop", sum(len(m["content"]) for m in messages), len(text))


class FailingEngine:
    """Raises `error` on every request: from `generate` at once, from `stream` after yielding `first` (a model server
    that breaks off mid-answer, or a bug nobody planned for)."""

    name = "failing"

    def __init__(self, error: Exception, first: tuple[str, ...] = ()) -> None:
        self.error = error
        self.first = first

    async def generate(self, messages: list[Message], params: SamplingParams) -> Completion:
        raise self.error

    async def stream(self, messages: list[Message], params: SamplingParams) -> AsyncIterator[Delta]:
        for piece in self.first:
            yield Delta(piece)
        raise self.error
