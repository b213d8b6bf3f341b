"""A job request -> the `finetune train` config it runs: OpenAI hyperparameters ("auto" resolved) plus the
`kongming` extension (task, LoRA, other training keys), with absolute paths under the job's folder."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.training.config import Config, ConfigError, dump_yaml, from_dict

BASE_LR = 2e-4  # learning_rate_multiplier 1 (the default of finetune's configs)
AUTO_BATCH_SIZE = 8
# Hyperparameters that have an OpenAI field: the extension may not set them a second way.
OPENAI_KEYS = {"epochs": "n_epochs", "batch_size": "batch_size", "lr": "learning_rate_multiplier", "seed": "seed"}
EXTENSION_SECTIONS = ("lora", "train", "data", "eval")
DATA_KEYS = {"val_split", "split_seed", "dedupe", "system", "max_examples", "labels", "prompt"}
SUFFIX = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class SpecError(ValueError):
    """A job request that cannot become a training config; `param` names the request field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def auto_epochs(records: int) -> int:
    """"auto" epochs: small sets are seen a few times, large ones once."""
    return 3 if records < 500 else 2 if records < 2000 else 1


def resolve_hyperparameters(hp: dict[str, Any], records: int) -> dict[str, Any]:
    """{n_epochs, batch_size, learning_rate_multiplier} with "auto" or missing replaced by the values used."""
    def pick(key: str, auto: Any) -> Any:
        value = hp.get(key)
        return auto if value in (None, "auto") else value

    out = {
        "n_epochs": pick("n_epochs", auto_epochs(records)),
        "batch_size": pick("batch_size", AUTO_BATCH_SIZE),
        "learning_rate_multiplier": pick("learning_rate_multiplier", 1.0),
    }
    for key, value in out.items():
        integer = key != "learning_rate_multiplier"
        ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
        if not ok or (integer and not float(value).is_integer()):
            kind = "a positive integer" if integer else "a positive number"
            raise SpecError(f"hyperparameters.{key}: must be \"auto\" or {kind}, got {value!r}",
                            f"hyperparameters.{key}")  # fmt: skip
    return out


def model_name(base: str, suffix: str | None, job_id: str) -> str:
    """`ft:<base>:<suffix>:<job id>` (OpenAI's shape; a base given as a folder is named by the folder)."""
    short = Path(base).name if "/" in base else base
    return f"ft:{short}:{suffix or ''}:{job_id}"


def check_extension(ext: dict[str, Any]) -> None:
    """SpecError for an extension key that has an OpenAI field or that is not ours to set."""
    unknown = set(ext) - {"task", *EXTENSION_SECTIONS}
    if unknown:
        raise SpecError(f"unknown key kongming.{sorted(unknown)[0]} (known: task, "
                        f"{', '.join(EXTENSION_SECTIONS)})", f"kongming.{sorted(unknown)[0]}")  # fmt: skip
    for key in ext.get("train") or {}:
        if key in OPENAI_KEYS:
            raise SpecError(f"kongming.train.{key}: set it with the OpenAI field "
                            f"{OPENAI_KEYS[key]} instead", f"kongming.train.{key}")  # fmt: skip
    for key in ext.get("data") or {}:
        if key not in DATA_KEYS:
            raise SpecError(f"kongming.data.{key} cannot be set for a job (allowed: {', '.join(sorted(DATA_KEYS))})",
                            f"kongming.data.{key}")  # fmt: skip
    if "output_dir" in (ext.get("train") or {}):
        raise SpecError("kongming.train.output_dir is chosen by the service", "kongming.train.output_dir")


@dataclass
class JobPaths:
    """Where a job keeps its data, config and run: `data_dir/finetune/jobs/<job id>/`."""

    root: Path

    @classmethod
    def of(cls, data_dir: str | Path, job_id: str) -> JobPaths:
        return cls(Path(data_dir).resolve() / "finetune" / "jobs" / job_id)

    @property
    def train(self) -> Path:
        return self.root / "train.jsonl"

    @property
    def val(self) -> Path:
        return self.root / "validation.jsonl"

    @property
    def config(self) -> Path:
        return self.root / "job.yaml"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def log(self) -> Path:
        return self.root / "worker.log"


def build_config(request: dict[str, Any], paths: JobPaths, has_val: bool) -> Config:
    """The training config of a job request (its hyperparameters already resolved). SpecError names the field."""
    ext = request.get("kongming") or {}
    check_extension(ext)
    hp = request["hyperparameters"]
    mult = hp["learning_rate_multiplier"]
    raw: dict[str, Any] = {
        "model": request["base"],
        "task": ext.get("task", "chat"),
        "output_dir": str(paths.run),
        "data": {"train": str(paths.train), "val": str(paths.val) if has_val else None, "format": "openai",
                 **(ext.get("data") or {})},
        "lora": dict(ext.get("lora") or {}),
        "train": {**(ext.get("train") or {}), "epochs": hp["n_epochs"], "batch_size": hp["batch_size"],
                  "lr": BASE_LR * mult, "seed": request["seed"]},
        "eval": dict(ext.get("eval") or {}),
    }  # fmt: skip
    try:
        return from_dict(raw)
    except ConfigError as exc:
        message = str(exc)
        key = message.split(":", 1)[0].removeprefix("unknown key ").split(" ")[0].rstrip(";,")
        openai = {"train.epochs": "hyperparameters.n_epochs", "train.batch_size": "hyperparameters.batch_size",
                  "train.lr": "hyperparameters.learning_rate_multiplier", "train.seed": "seed"}  # fmt: skip
        param = openai.get(key) or f"kongming.{key}"
        raise SpecError(message.replace(key, param, 1), param) from None


def write_config(cfg: Config, paths: JobPaths, job_id: str) -> None:
    from finetune.training.runio import write_text

    header = f"finetune train {paths.config}\nwritten by the fine-tuning job {job_id}"
    write_text(paths.config, dump_yaml(cfg, header))
