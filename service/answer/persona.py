"""Which engine answers: one per configured persona and per fine-tuned model, built on first use; in process, all
adapters on one base model share it."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..engines import AdapterEngine, Engine, LocalEngine, Message, OpenAICompatibleEngine, SamplingParams
from ..errors import EngineUnavailable
from ..settings import PersonaConfig, ServiceSettings

if TYPE_CHECKING:
    from finetune.jobs.registry import FineTunedModel, ModelRegistry

log = logging.getLogger(__name__)


def persona_messages(persona: PersonaConfig, messages: Sequence[Message]) -> list[Message]:
    """The persona's system prompt first; a client's own system messages are appended to it."""
    extra = "\n".join(m["content"] for m in messages if m["role"] in ("system", "developer") and m["content"])
    system = persona.system_prompt + (f"\n\n{extra}" if extra else "")
    return [{"role": "system", "content": system}, *(m for m in messages if m["role"] in ("user", "assistant", "tool"))]


def persona_params(persona: PersonaConfig, params: SamplingParams) -> SamplingParams:
    """`params` (changed in place) with the persona's decoding where the request set none: its repetition controls,
    its script control and its stop strings ahead of the request's own (not when tools are offered: a tool call
    spans lines)."""
    if params.repetition_penalty is None:
        params.repetition_penalty = persona.repetition_penalty
    if params.no_repeat_ngram_size is None:
        params.no_repeat_ngram_size = persona.no_repeat_ngram_size or None
    if params.frequency_penalty is None:
        params.frequency_penalty = persona.frequency_penalty
    if params.keep_script is None:
        params.keep_script = persona.keep_script
    if not params.tools:
        params.stop = list(dict.fromkeys([*persona.stop, *params.stop]))
    return params


class Engines:
    """Which engine answers what: an upstream OpenAI-compatible server when `upstream_url` is set (vLLM with
    the merged persona model, or LoRA adapters served under the persona's name), in-process models otherwise.
    Tests and embedders of the library pass ready engines in `overrides` (keys: "rag", persona names).

    In process, one LocalEngine per base model folder holds every adapter on that base (the personas' and the
    fine-tuned models'): the base weights are in memory once. A fine-tuned model (finetune.jobs.registry) is
    served under its id: in process as one more adapter, upstream registered with vLLM's load_lora_adapter. A
    persona bound to a fine-tuned model is answered by that model (the registry is read per request: a binding
    made by another replica applies at once)."""

    def __init__(self, settings: ServiceSettings, overrides: dict[str, Engine | None] | None = None) -> None:
        self.settings = settings
        self._engines: dict[str, Engine | None] = dict(overrides or {})
        self._lock = threading.RLock()  # _build_persona holds it while _host takes it
        self._hosts: dict[Path, LocalEngine] = {}  # base model folder -> the engine holding its adapters
        self._tuned: dict[str, tuple[FineTunedModel, Engine]] = {}
        self._registry: ModelRegistry | None = None

    @property
    def registry(self) -> ModelRegistry:
        """The fine-tuned models (data_dir/finetune/models.sqlite3), opened on first use."""
        if self._registry is None:
            from finetune.jobs.registry import ModelRegistry

            self._registry = ModelRegistry(self.settings.data_dir)
        return self._registry

    def rag(self) -> Engine | None:
        """The engine that writes RAG answers, or None for the extractive answerer."""
        if "rag" not in self._engines:
            s = self.settings
            self._engines["rag"] = (
                self._upstream(s.rag_model, "kongming-rag") if s.upstream_url and s.rag_model else None
            )
        return self._engines["rag"]

    async def persona(self, persona: PersonaConfig) -> Engine:
        """The persona's engine: the fine-tuned model bound to it, else its configured model."""
        return (await self.persona_engine(persona))[0]

    async def persona_engine(self, persona: PersonaConfig) -> tuple[Engine, FineTunedModel | None]:
        """The persona's engine and the fine-tuned model bound to it (None: its configured model answers)."""
        models = await asyncio.to_thread(self._registered)
        await self._drop_deleted(models)
        bound = next((m for m in models or [] if m.persona == persona.name), None)
        if bound is not None:
            return await self.fine_tuned(bound), bound
        engine = self._engines.get(persona.name)
        if engine is None:
            engine = await asyncio.to_thread(self._build_persona, persona)
        return engine, None

    def _build_persona(self, persona: PersonaConfig) -> Engine:
        with self._lock:
            engine = self._engines.get(persona.name)
            if engine is not None:
                return engine
            if self.settings.upstream_url:
                engine = self._upstream(persona.served_model or persona.name, f"kongming-persona-{persona.name}",
                                        base=persona.model)
            else:
                engine = self._local(persona)
            self._engines[persona.name] = engine
            return engine

    def _registered(self) -> list[FineTunedModel] | None:
        """The registry's models (one read), None when it cannot be read (a persona then answers with its own
        model)."""
        try:
            return self.registry.list()
        except (OSError, sqlite3.Error) as exc:  # a read-only or full data folder
            log.warning("fine-tuned model registry unreadable: %s", exc)
            return None

    async def _drop_deleted(self, models: list[FineTunedModel] | None) -> None:
        """Forget the fine-tuned models this process holds that `models` (the registry now) no longer has: deleted
        through another replica sharing the data folder. Their adapters leave memory here at this replica's next
        persona or fine-tuned request, not only at its restart."""
        if models is None:
            return
        present = {m.id for m in models}
        for model_id in [i for i in self._tuned if i not in present]:
            log.info("fine-tuned model %s was deleted elsewhere: no longer served here", model_id)
            await self.forget(model_id)

    async def fine_tuned(self, model: FineTunedModel) -> Engine:
        """The engine serving `model` under its id (built, and upstream registered, on first use)."""
        if any(i != model.id for i in self._tuned):  # others held here: one registry read to drop deleted ones
            await self._drop_deleted(await asyncio.to_thread(self._registered))
        cached = self._tuned.get(model.id)
        if cached is not None and _same_weights(cached[0], model):
            return cached[1]
        if cached is not None:  # the id now names other weights (a job that ran again): drop the old ones
            await self.forget(model.id)
        engine: Engine
        if self.settings.upstream_url:
            upstream = self._upstream(model.id, model.id)
            await upstream.load_lora_adapter(model.id, model.adapter_path)
            engine = upstream
        else:
            host = await asyncio.to_thread(self._host, model.base_model, f"fine-tuned model {model.id!r}")
            engine = AdapterEngine(host, model.id, model.adapter_path)
        self._tuned[model.id] = (model, engine)
        return engine

    async def forget(self, model_id: str) -> None:
        """Stop serving a fine-tuned model: its adapter leaves memory here (or is unloaded upstream)."""
        cached = self._tuned.pop(model_id, None)
        if cached is None:
            return
        engine = cached[1]
        if isinstance(engine, AdapterEngine):
            await engine.unload()
        elif isinstance(engine, OpenAICompatibleEngine):
            await engine.unload_lora_adapter(model_id)
            await engine.aclose()

    def _host(self, model: str, who: str) -> LocalEngine:
        """The one in-process engine of base `model` (gemma-3-270m, a folder or a hub id), made on first use."""
        from finetune.models.base import ModelError, resolve_model

        try:
            base = Path(resolve_model(model, self.settings.data_dir / "models"))
        except ModelError as exc:
            raise EngineUnavailable(f"{who}: {exc}") from exc
        with self._lock:
            host = self._hosts.get(base)
            if host is None:
                host = self._hosts[base] = LocalEngine(base, name=f"kongming-base-{base.name}",
                                                       device=self.settings.device)
            return host

    def _upstream(self, model: str, name: str, base: str | None = None) -> OpenAICompatibleEngine:
        """`base`: the served model's base, whose tokenizer gives the ids a Chinese reply may say."""
        from functools import partial

        from ..engines.script import allowed_token_ids

        s = self.settings
        assert s.upstream_url
        return OpenAICompatibleEngine(
            s.upstream_url,
            model,
            api_key=s.upstream_api_key,
            name=name,
            timeout=s.upstream_timeout,
            connect_timeout=s.upstream_connect_timeout,
            # only from a model folder here: a packaged base is converted on first use (minutes), which a request
            # must not wait for, and the served model may be another (the 400 retry in the engine)
            script_ids=partial(allowed_token_ids, base) if base and Path(base).is_dir() else None,
        )

    def _local(self, persona: PersonaConfig) -> Engine:
        host = self._host(persona.model, f"persona {persona.name!r}")
        adapter = Path(persona.adapter) if persona.adapter else None
        if adapter is not None and not (adapter / "adapter_config.json").is_file():
            log.warning("persona %s: no adapter at %s, serving the base model %s", persona.name, adapter,
                        host.model_path)
            adapter = None
        name = f"kongming-persona-{persona.name}"
        return AdapterEngine(host, name, adapter)

    async def aclose(self) -> None:
        engines = [*self._engines.values(), *(e for _, e in self._tuned.values()), *self._hosts.values()]
        for engine in engines:
            close = getattr(engine, "aclose", None)
            if close is not None:
                await close()


def _same_weights(a: FineTunedModel, b: FineTunedModel) -> bool:
    return (a.base_model, a.adapter_path, a.created_at) == (b.base_model, b.adapter_path, b.created_at)
