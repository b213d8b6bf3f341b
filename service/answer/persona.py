"""The `persona` answerer's engines and prompts: one engine per configured persona, built on first use."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from ..engines import Engine, Message, OpenAICompatibleEngine
from ..errors import EngineUnavailable
from ..settings import PersonaConfig, ServiceSettings

log = logging.getLogger(__name__)


def persona_messages(persona: PersonaConfig, messages: Sequence[Message]) -> list[Message]:
    """The persona's system prompt first; a client's own system messages are appended to it."""
    extra = "\n".join(m["content"] for m in messages if m["role"] in ("system", "developer") and m["content"])
    system = persona.system_prompt + (f"\n\n{extra}" if extra else "")
    return [{"role": "system", "content": system}, *(m for m in messages if m["role"] in ("user", "assistant", "tool"))]


class Engines:
    """Which engine answers what: an upstream OpenAI-compatible server when `upstream_url` is set (vLLM with
    the merged persona model, or LoRA adapters served under the persona's name), in-process models otherwise.
    Tests and embedders of the library pass ready engines in `overrides` (keys: "rag", persona names)."""

    def __init__(self, settings: ServiceSettings, overrides: dict[str, Engine | None] | None = None) -> None:
        self.settings = settings
        self._engines: dict[str, Engine | None] = dict(overrides or {})
        self._lock = threading.Lock()

    def rag(self) -> Engine | None:
        """The engine that writes RAG answers, or None for the extractive answerer."""
        if "rag" not in self._engines:
            s = self.settings
            self._engines["rag"] = (
                self._upstream(s.rag_model, "kongming-rag") if s.upstream_url and s.rag_model else None
            )
        return self._engines["rag"]

    async def persona(self, persona: PersonaConfig) -> Engine:
        engine = self._engines.get(persona.name)
        if engine is None:
            engine = await asyncio.to_thread(self._build_persona, persona)
        return engine

    def _build_persona(self, persona: PersonaConfig) -> Engine:
        with self._lock:
            engine = self._engines.get(persona.name)
            if engine is not None:
                return engine
            if self.settings.upstream_url:
                engine = self._upstream(persona.served_model or persona.name, f"kongming-persona-{persona.name}")
            else:
                engine = self._local(persona)
            self._engines[persona.name] = engine
            return engine

    def _upstream(self, model: str, name: str) -> Engine:
        s = self.settings
        assert s.upstream_url
        return OpenAICompatibleEngine(
            s.upstream_url,
            model,
            api_key=s.upstream_api_key,
            name=name,
            timeout=s.upstream_timeout,
            connect_timeout=s.upstream_connect_timeout,
        )

    def _local(self, persona: PersonaConfig) -> Engine:
        from finetune.models.base import ModelError, resolve_model

        from ..engines import LocalEngine

        try:
            base = resolve_model(persona.model, self.settings.data_dir / "models")
        except ModelError as exc:
            raise EngineUnavailable(f"persona {persona.name!r}: {exc}") from exc
        adapter = Path(persona.adapter) if persona.adapter else None
        if adapter is not None and not (adapter / "adapter_config.json").is_file():
            log.warning("persona %s: no adapter at %s, serving the base model %s", persona.name, adapter, base)
            adapter = None
        return LocalEngine(base, adapter_path=adapter, name=f"kongming-persona-{persona.name}",
                           device=self.settings.device)

    async def aclose(self) -> None:
        for engine in self._engines.values():
            close = getattr(engine, "aclose", None)
            if close is not None:
                await close()
