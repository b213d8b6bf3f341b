"""`finetune export`: a run's adapter and its record (config, metrics, loss curve, evaluation), small, to ship."""

from __future__ import annotations

import hashlib
import shutil
from datetime import UTC, datetime
from pathlib import Path

from finetune.models.merge import check_adapter, find_config
from finetune.training.runio import CONFIG_FILE, RunError, write_dir, write_json

EXPORT_FILE = "export.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# What a reader of the shipped adapter wants next to it; the tokenizer is the base's and is left out (33 MB for
# gemma-3-270m), as are checkpoints.
RECORD = ["adapter_config.json", "metrics.jsonl", "train_summary.json", "loss_curve.png", "eval.json",
          "eval_samples.jsonl", "chat_template.jinja"]  # fmt: skip
DTYPES = ("float16", "bfloat16", "float32")


class ExportError(RunError):
    """The run cannot be exported; the message names the file and the fix."""


def export_run(run_dir: str | Path, out: str | Path, dtype: str = "float16") -> Path:
    """Copy the adapter of `run_dir` (weights cast to `dtype`) and the run's record into `out`, atomically.

    The folder is a peft adapter (PeftModel.from_pretrained, vLLM --lora-modules), and `finetune merge` and
    `finetune eval` accept it like the run itself: its config.yaml is the run's resolved config."""
    import torch
    from safetensors.torch import load_file, save_file

    run, target = Path(run_dir), Path(out)
    if dtype not in DTYPES:
        raise ExportError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    check_adapter(run)
    config = find_config(run)
    if not (run / ADAPTER_WEIGHTS).is_file():
        raise ExportError(f"no {ADAPTER_WEIGHTS} in {run}: export reads safetensors adapters only")
    weights = load_file(run / ADAPTER_WEIGHTS)
    cast = {k: v.to(getattr(torch, dtype)).contiguous() for k, v in weights.items()}

    def fill(tmp: Path) -> None:
        save_file(cast, tmp / ADAPTER_WEIGHTS, metadata={"format": "pt"})
        shutil.copy2(config, tmp / CONFIG_FILE)
        copied = [name for name in RECORD if (run / name).is_file()]
        for name in copied:
            shutil.copy2(run / name, tmp / name)
        write_json(tmp / EXPORT_FILE, {
            "source": str(run),
            "dtype": dtype,
            "parameters": sum(v.numel() for v in cast.values()),
            "adapter_sha256": hashlib.sha256((tmp / ADAPTER_WEIGHTS).read_bytes()).hexdigest(),
            "files": sorted([ADAPTER_WEIGHTS, CONFIG_FILE, *copied]),
            "exported": datetime.now(UTC).isoformat(timespec="seconds"),
        })  # fmt: skip

    return write_dir(target, fill)
