"""One adapter (or the bare base) of an in-process engine that holds several LoRA adapters on one base model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path

from .base import Completion, Delta, Message, SamplingParams
from .local import LocalEngine


class AdapterEngine:
    """An Engine answering with the adapter in `adapter_path`, loaded on `host`'s base under `adapter_name` on
    first use (and again if it was deleted or the host reloaded); `adapter_path` None answers with the base alone.

    Engines made on one host share its base weights, its tokenizer and its one-generation-at-a-time queue."""

    def __init__(
        self, host: LocalEngine, name: str, adapter_path: str | Path | None, adapter_name: str | None = None
    ) -> None:
        self.host = host
        self.name = name
        self.adapter_path = Path(adapter_path) if adapter_path is not None else None
        self.adapter_name = (adapter_name or name) if adapter_path is not None else None

    async def _ready(self) -> None:
        if self.adapter_name is None or self.adapter_path is None:
            return
        if self.host.adapters.get(self.adapter_name) != self.adapter_path:
            await asyncio.to_thread(self.host.load_adapter, self.adapter_name, self.adapter_path)

    async def generate(self, messages: list[Message], params: SamplingParams) -> Completion:
        await self._ready()
        return await self.host.generate(messages, params, adapter=self.adapter_name)

    async def stream(self, messages: list[Message], params: SamplingParams) -> AsyncGenerator[Delta, None]:
        await self._ready()
        # closed with this stream (a client gone): the host stops the generation at once, not when collected
        async with aclosing(self.host.stream(messages, params, adapter=self.adapter_name)) as deltas:
            async for delta in deltas:
                yield delta

    async def unload(self) -> bool:
        """Free this adapter's weights on the host (the base stays); False when it was not loaded."""
        if self.adapter_name is None:
            return False
        return await asyncio.to_thread(self.host.delete_adapter, self.adapter_name)
