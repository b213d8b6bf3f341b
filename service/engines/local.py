"""In-process engine: a transformers causal LM with peft LoRA adapters (merged, or several on one base chosen per
request), one generation at a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any

from ..errors import ContextTooLong, EngineUnavailable
from .base import Completion, Delta, Message, SamplingParams, text_turns
from .script import BannedTokens, foreign_mask, is_chinese

log = logging.getLogger(__name__)
# The most tokens (prompt plus completion) one in-process request may use unless the engine is given another bound:
# a CPU reads about a thousand prompt tokens in seconds, so a longer prompt (a pasted book chapter: 15k tokens took
# over four minutes) is refused with a 400 naming this limit instead of holding the one generation slot for minutes.
DEFAULT_MAX_CONTEXT = 4096


class LocalEngine:
    """Chat completions from a model folder on this machine (transformers imported on first use, not at import).

    The prompt goes through `finetune.models.template.encode_chat`, so it is the prompt the model was trained on and the
    one vLLM computes from the saved template. Requests queue: one generation runs at a time per engine, the
    others wait their turn without holding a thread. A stream consumer that goes away stops its generation at
    the next token.

    Several adapters on one base (`load_adapter`, `delete_adapter`, `service.engines.adapters.AdapterEngine`):
    the base weights are held once; each request names its adapter (None: the base, adapters disabled) and the
    worker selects it with peft's `set_adapter` under the generation lock, so selection and generation never
    interleave. `adapter_path` given here is the single-adapter mode instead: merged once into the base.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        adapter_path: str | Path | None = None,
        name: str | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        max_context: int | None = DEFAULT_MAX_CONTEXT,
    ) -> None:
        self.model_path = Path(model_path)
        self.adapter_path = Path(adapter_path) if adapter_path is not None else None
        self.name = name or (self.adapter_path or self.model_path).name
        self.device = device
        self.dtype = dtype
        self.max_context = max_context
        self._model: Any = None
        self._tokenizer: Any = None
        self._eos_ids: list[int] = []
        self._context = 0
        self._load_lock = threading.Lock()
        # The guarantee of one generation at a time is this lock, held by the worker thread; the per-loop asyncio
        # locks make waiting requests queue in order without each parking a thread on it.
        self._generate_lock = threading.Lock()
        self._turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()
        self._adapters: dict[str, Path] = {}  # peft adapter name -> folder, loaded on the one base

    # -- loading -------------------------------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def context_length(self) -> int:
        """Most tokens (prompt plus completion) one request may use; loads the model."""
        self.load()
        return self._context

    def load(self) -> None:
        """Load tokenizer and model (and adapter) once; later calls return at once. Thread-safe."""
        if self._model is not None:
            return
        with self._load_lock:
            if self._model is None:
                self._load()

    def _load(self) -> None:
        if not (self.model_path / "config.json").is_file():
            what = "does not exist" if not self.model_path.exists() else "has no config.json"
            raise EngineUnavailable(
                f"model folder {self.model_path} {what}: point the persona's model at a transformers model folder "
                "(config.json, weights, tokenizer), e.g. one written by `finetune merge`"
            )
        if self.adapter_path is not None and not (self.adapter_path / "adapter_config.json").is_file():
            raise EngineUnavailable(
                f"no adapter_config.json in {self.adapter_path}: point the adapter at a directory written by "
                "`finetune train`, or unset it to serve the base model"
            )
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from finetune.models.template import end_of_turn_ids, ensure_chat_template

        dtype: Any = self.dtype if self.dtype == "auto" else getattr(torch, self.dtype)
        try:
            tokenizer = ensure_chat_template(AutoTokenizer.from_pretrained(self.model_path))
            model: Any = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=dtype)
            if self.adapter_path is not None:
                from peft import PeftModel

                # Merged once here: the same outputs as the adapter on top, at the base model's speed.
                model = PeftModel.from_pretrained(model, self.adapter_path).merge_and_unload()
        except (OSError, ValueError) as exc:
            raise EngineUnavailable(f"cannot load model {self.model_path}: {exc}") from exc
        model = model.to(self.device)
        model.eval()
        config = model.config
        limits = [
            getattr(config, key, None) for key in ("max_position_embeddings", "n_positions", "max_sequence_length")
        ]
        context = next((int(v) for v in limits if isinstance(v, int) and v > 0), 0)
        if self.max_context:
            context = min(context, self.max_context) if context else self.max_context
        eos = model.generation_config.eos_token_id
        eos_ids = end_of_turn_ids(tokenizer) + ([eos] if isinstance(eos, int) else list(eos or []))
        self._eos_ids = list(dict.fromkeys(eos_ids))
        self._context = context or 1 << 30
        self._tokenizer = tokenizer
        self._model = model
        adapter = f" + adapter {self.adapter_path}" if self.adapter_path else ""
        log.info("loaded %s%s (context %d) on %s", self.model_path, adapter, self._context, self.device)

    # -- adapters on the one base ----------------------------------------------------------------------------------

    @property
    def adapters(self) -> dict[str, Path]:
        """The adapters loaded on the base: peft adapter name -> folder."""
        return dict(self._adapters)

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Load the LoRA adapter in `path` under `name` next to the others (same name and folder: nothing to do;
        same name, other folder: replaced). Blocks while a generation runs. EngineUnavailable: no adapter there,
        or it does not fit the base."""
        path = Path(path)
        if self._adapters.get(name) == path:
            return
        if not (path / "adapter_config.json").is_file():
            raise EngineUnavailable(f"adapter {name!r}: no adapter_config.json in {path.name}")
        if self.adapter_path is not None:
            raise EngineUnavailable(f"{self.name} serves a merged adapter: load adapters on an engine without one")
        self.load()
        from peft import PeftModel

        with self._generate_lock:
            if name in self._adapters:
                self._delete_adapter(name)
            try:
                if isinstance(self._model, PeftModel):
                    self._model.load_adapter(path, adapter_name=name)
                else:
                    self._model = PeftModel.from_pretrained(self._model, path, adapter_name=name)
            except (OSError, ValueError, RuntimeError, KeyError) as exc:
                raise EngineUnavailable(f"cannot load adapter {name!r} on {self.model_path.name}: {exc}") from exc
            self._model.eval()
            self._adapters[name] = path
        log.info("loaded adapter %s from %s on %s", name, path, self.model_path)

    def delete_adapter(self, name: str) -> bool:
        """Free the adapter `name` (its weights leave memory); False when it was not loaded. Blocks while a
        generation runs."""
        with self._generate_lock:
            if name not in self._adapters:
                return False
            self._delete_adapter(name)
        log.info("deleted adapter %s from %s", name, self.model_path)
        return True

    def _delete_adapter(self, name: str) -> None:
        del self._adapters[name]
        self._model.delete_adapter(name)

    @contextlib.contextmanager
    def _selected(self, adapter: str | None) -> Iterator[None]:
        """Generate with `adapter` (None: the base alone); called with the generation lock held."""
        from peft import PeftModel

        if not isinstance(self._model, PeftModel):
            if adapter is not None:
                raise EngineUnavailable(f"adapter {adapter!r} is not loaded (it was deleted)")
            yield
        elif adapter is None:
            with self._model.disable_adapter():
                yield
        else:
            if adapter not in self._adapters:
                raise EngineUnavailable(f"adapter {adapter!r} is not loaded (it was deleted)")
            self._model.set_adapter(adapter)
            yield

    # -- generation ------------------------------------------------------------------------------------------------

    async def generate(self, messages: list[Message], params: SamplingParams, adapter: str | None = None) -> Completion:
        """The whole completion; `adapter`: a name given to load_adapter (None: the base or the merged model)."""
        parts: list[str] = []
        last = Delta()
        async for delta in self.stream(messages, params, adapter):
            parts.append(delta.text)
            last = delta
        return Completion(
            text="".join(parts),
            finish_reason=last.finish_reason or "stop",
            prompt_tokens=last.prompt_tokens or 0,
            completion_tokens=last.completion_tokens or 0,
        )

    async def stream(
        self, messages: list[Message], params: SamplingParams, adapter: str | None = None
    ) -> AsyncGenerator[Delta, None]:
        if self._model is None:
            await asyncio.to_thread(self.load)
        from transformers import AsyncTextIteratorStreamer

        from finetune.models.template import encode_chat

        prompt_ids = encode_chat(self._tokenizer, text_turns(messages))  # no tools in process
        n_prompt = len(prompt_ids)
        if n_prompt >= self._context:
            raise ContextTooLong(
                f"This model's maximum context length is {self._context} tokens. However, your messages resulted "
                f"in {n_prompt} tokens. Please reduce the length of the messages.",
                param="messages",
            )
        max_new = max(1, min(params.max_tokens, self._context - n_prompt))
        stops = [s for s in params.stop if s]

        loop = asyncio.get_running_loop()
        turn = self._turns.setdefault(loop, asyncio.Lock())
        async with turn:
            # TextIteratorStreamer's asyncio sibling: the worker thread hands decoded text to this loop.
            streamer = AsyncTextIteratorStreamer(self._tokenizer, skip_prompt=True, skip_special_tokens=True)
            cancel = threading.Event()
            done: asyncio.Future[tuple[int, int | None]] = loop.create_future()
            worker = threading.Thread(
                target=self._worker,
                args=(loop, done, streamer, cancel, prompt_ids, max_new, params, adapter,
                      bool(params.keep_script) and is_chinese(messages)),
                name=f"generate-{self.name}",
                daemon=True,
            )
            worker.start()
            held = ""  # text that may be the start of a stop string, not yet sent
            hit_stop = False
            try:
                async for piece in streamer:
                    if not stops:
                        if piece:
                            yield Delta(text=piece)
                        continue
                    held += piece
                    cut = _find_stop(held, stops)
                    if cut is not None:
                        hit_stop = True
                        cancel.set()
                        if held[:cut]:
                            yield Delta(text=held[:cut])
                        held = ""
                        break
                    keep = _stop_prefix_len(held, stops)
                    if len(held) > keep:
                        yield Delta(text=held[: len(held) - keep])
                        held = held[len(held) - keep :]
                n_completion, last_id = await done
                if held:
                    yield Delta(text=held)
                finish = "stop" if hit_stop or last_id in self._eos_ids or n_completion < max_new else "length"
                yield Delta(finish_reason=finish, prompt_tokens=n_prompt, completion_tokens=n_completion)
            finally:
                cancel.set()
                if not done.done():
                    # Wait for the worker so the next request in the queue starts on an idle model.
                    try:
                        await asyncio.shield(done)
                    except asyncio.CancelledError:
                        raise
                    except Exception:  # already leaving; the worker logged its own failure
                        pass

    def _worker(
        self,
        loop: asyncio.AbstractEventLoop,
        done: asyncio.Future[tuple[int, int | None]],
        streamer: Any,
        cancel: threading.Event,
        prompt_ids: list[int],
        max_new: int,
        params: SamplingParams,
        adapter: str | None = None,
        chinese: bool = False,
    ) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

        def finish(result: tuple[int, int | None] | None, error: BaseException | None = None) -> None:
            if done.done():
                return
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(result or (0, None))

        with self._generate_lock:
            try:
                input_ids = torch.tensor([prompt_ids], device=self.device)
                sampling: dict[str, Any]
                if params.temperature <= 0:
                    sampling = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
                else:
                    sampling = {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p,
                                "top_k": None}
                    if params.seed is not None:
                        torch.manual_seed(params.seed)
                if params.repetition_penalty is not None:
                    sampling["repetition_penalty"] = params.repetition_penalty
                if params.no_repeat_ngram_size:
                    sampling["no_repeat_ngram_size"] = params.no_repeat_ngram_size
                processors: list[Any] = []
                if params.frequency_penalty or params.presence_penalty:
                    from .penalties import OutputPenalty

                    processors.append(OutputPenalty(len(prompt_ids), params.frequency_penalty or 0.0,
                                                    params.presence_penalty or 0.0))
                if chinese:  # a Chinese reply says no token of another script (code identifiers, drug names)
                    processors.append(BannedTokens(foreign_mask(self._tokenizer), keep=self._eos_ids))
                if processors:
                    from transformers import LogitsProcessorList

                    sampling["logits_processor"] = LogitsProcessorList(processors)
                pad = self._tokenizer.pad_token_id
                if pad is None and self._eos_ids:
                    pad = self._eos_ids[0]
                with torch.inference_mode(), self._selected(adapter):
                    out = self._model.generate(
                        input_ids=input_ids,
                        attention_mask=torch.ones_like(input_ids),
                        max_new_tokens=max_new,
                        eos_token_id=self._eos_ids or None,
                        pad_token_id=pad,
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([_Cancelled()]),
                        **sampling,
                    )
                generated = out[0, len(prompt_ids) :].tolist()
                if cancel.is_set():
                    log.info("generation stopped early after %d tokens (stop string or client gone)", len(generated))
                loop.call_soon_threadsafe(finish, (len(generated), generated[-1] if generated else None))
            except BaseException as exc:
                log.exception("generation failed in %s", self.name)
                try:
                    streamer.end()  # the consumer waits on the streamer; wake it so it sees the error
                    loop.call_soon_threadsafe(finish, None, exc)
                except RuntimeError:  # the consumer's loop is gone
                    pass

    async def aclose(self) -> None:
        """Drop the model (frees its memory); the next request loads it again."""
        with self._load_lock:
            self._model = None
            self._tokenizer = None
            self._adapters.clear()


def _find_stop(text: str, stops: list[str]) -> int | None:
    """Index of the earliest stop string in `text`, or None."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def _stop_prefix_len(text: str, stops: list[str]) -> int:
    """Length of the longest end of `text` that begins some stop string (held back until it resolves)."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best
