"""`finetune merge`: fold a run's LoRA adapter into its base and save a standalone HF folder that vLLM serves."""

from __future__ import annotations

import json
import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path

from finetune.training.config import Config, load_config
from finetune.training.runio import CONFIG_FILE, RunError, write_dir, write_json

log = logging.getLogger(__name__)
MERGE_FILE = "merge.json"


class MergeError(RunError):
    """The adapter or its base cannot be merged; the message names the file and the fix."""


def find_config(adapter_dir: Path) -> Path:
    """The resolved config of a run: in the run directory, or two levels up for checkpoints/step-N."""
    for candidate in (adapter_dir / CONFIG_FILE, adapter_dir.parent.parent / CONFIG_FILE):
        if candidate.is_file():
            return candidate
    raise MergeError(
        f"no {CONFIG_FILE} in {adapter_dir}: merge reads the base model from the run's resolved "
        "config; point at a directory written by `finetune train`"
    )


def check_adapter(adapter_dir: Path) -> None:
    if not adapter_dir.is_dir():
        raise MergeError(f"{adapter_dir}: no such directory; point at a run written by `finetune train`")
    if not (adapter_dir / "adapter_config.json").is_file():
        hint = (
            f" (its checkpoints are under {adapter_dir / 'checkpoints'}; finish the run, or merge a checkpoint "
            "directly)"
            if (adapter_dir / "checkpoints").is_dir()
            else ""
        )
        raise MergeError(
            f"no adapter_config.json in {adapter_dir}: point at a directory written by `finetune train`{hint}"
        )
    if not any((adapter_dir / n).is_file() for n in ("adapter_model.safetensors", "adapter_model.bin")):
        raise MergeError(
            f"no adapter_model.safetensors in {adapter_dir}: the adapter weights are missing; "
            "re-run `finetune train` with the run's config.yaml to write them"
        )


def merge_run(adapter_dir: str | Path, out: str | Path, force: bool = False, dtype: str = "auto") -> Path:
    """Merge `adapter_dir` (a finished run or one of its checkpoints) into its base model, saved at `out`.

    The folder holds model.safetensors, config.json, the tokenizer with the training chat template, a
    generation_config.json whose stop tokens end the assistant's turn, and merge.json (provenance).
    """
    import torch
    from peft import PeftModel

    from finetune.models.base import (
        load_causal_lm,
        load_tokenizer,
        quiet_peft,
        resolve_model,
        strip_quantization_config,
    )
    from finetune.models.template import end_of_turn_ids

    adapter_dir, out = Path(adapter_dir), Path(out)
    check_adapter(adapter_dir)
    config_path = find_config(adapter_dir)
    cfg: Config = load_config(config_path)
    if out.exists() and any(out.iterdir()) and not force:
        raise MergeError(f"{out} exists and is not empty: choose another --out, or pass --force to replace it")
    base = resolve_model(cfg.model, cfg.model_cache_dir)
    base_dtype = json.loads((base / "config.json").read_text(encoding="utf-8")).get("dtype", "float32")
    save_dtype = getattr(torch, base_dtype if dtype == "auto" else dtype, None)
    if not isinstance(save_dtype, torch.dtype):
        raise MergeError(f"--dtype {dtype}: use auto, float32, bfloat16 or float16")
    # Merge in float32 so the sum W + BA is exact before any rounding to the saved dtype.
    model = load_causal_lm(base, torch.float32, "cpu")
    with quiet_peft():
        merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    merged = merged.to(save_dtype)
    tokenizer = load_tokenizer(adapter_dir, fallback=base)
    gen = merged.generation_config
    gen.eos_token_id = end_of_turn_ids(tokenizer)
    gen.pad_token_id = tokenizer.pad_token_id

    def fill(tmp: Path) -> None:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        strip_quantization_config(tmp / "config.json")
        write_json(
            tmp / MERGE_FILE,
            {
                "base_model": cfg.model,
                "base_path": str(base),
                "adapter": str(adapter_dir.resolve()),
                "config": str(config_path.resolve()),
                "dtype": str(save_dtype).removeprefix("torch."),
                "system_prompt": cfg.data.system,
                "stop_token_ids": gen.eos_token_id,
                "merged_at": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        )
        shutil.copy2(config_path, tmp / "finetune_config.yaml")

    write_dir(out, fill)
    log.info("merged %s into %s -> %s", adapter_dir, base, out)
    return out

