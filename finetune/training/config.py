"""The training config: a dataclass per section, loaded from one YAML per experiment plus `key=value` overrides."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ZHUGE_STYLE = {
    "particles": list("之乎者也矣焉哉"),
    "self_address": ["亮", "吾", "某"],
    "address": ["主公", "将军", "陛下", "丞相", "都督", "足下"],
}


# Names other tools use for the same settings, so that the error can point at ours.
SYNONYMS = {
    "rank": "r", "lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout", "learning_rate": "lr",
    "gradient_accumulation_steps": "grad_accum", "num_train_epochs": "epochs", "lr_scheduler_type": "scheduler",
    "per_device_train_batch_size": "batch_size", "max_length": "max_seq_len", "max_seq_length": "max_seq_len",
    "warmup": "warmup_ratio", "save_steps": "save_every", "eval_steps": "eval_every", "model_name_or_path": "model",
}  # fmt: skip


def _suggest(key: str, known: list[str]) -> str | None:
    if SYNONYMS.get(key) in known:
        return SYNONYMS[key]
    near = difflib.get_close_matches(key, known, n=1)
    return near[0] if near else None


class ConfigError(ValueError):
    """A config cannot be used; the message names the key and what it accepts."""


@dataclass
class DataConfig:
    train: str = ""  # a data file (alpaca/sharegpt/openai JSON or JSONL; CSV for task=classify)
    val: str | None = None  # held-out file; when empty, val_split of train is held out
    format: Literal["auto", "alpaca", "sharegpt", "openai", "csv"] = "auto"
    val_split: float = 0.1
    split_seed: int = 42
    dedupe: bool = True
    system: str | None = None  # system prompt for conversations that bring none
    mix_path: str | None = None  # augmentation: general or RAG-grounded dialogue mixed into train
    mix_ratio: float = 0.0  # share of mix_path examples in the training set (0.2: 80/20)
    max_examples: int | None = None  # cap the training set (smoke runs)
    text_column: str = "review"  # task=classify: CSV columns, label names by label value, and the prompt
    label_column: str = "label"
    labels: list[str] = field(default_factory=lambda: ["差评", "好评"])
    prompt: str = "判断这条外卖评论是好评还是差评，只回答“好评”或“差评”。\n评论：{text}"


@dataclass
class LoraConfig:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(ALL_PROJECTIONS))
    qlora: bool = False  # 4-bit base through bitsandbytes; CUDA only


@dataclass
class TrainConfig:
    lr: float = 2e-4
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = 0.03
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs when set
    batch_size: int = 4  # sequences per micro-batch (packed rows of max_seq_len when batching=packing)
    grad_accum: int = 1
    max_seq_len: int = 512
    gradient_checkpointing: bool = False
    bf16: Literal["auto", "true", "false"] = "auto"  # auto: bf16 where the GPU supports it, float32 on CPU
    seed: int = 42
    batching: Literal["packing", "length", "none"] = "packing"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    eval_every: int = 50  # steps between validation losses (0: only at the end)
    val_max_examples: int | None = 200
    save_every: int = 100  # steps between checkpoints (0: only at the end)
    keep_checkpoints: int = 2
    device: str = "auto"  # auto | cpu | cuda | cuda:N


@dataclass
class EvalConfig:
    max_samples: int = 50  # held-out pairs generated (chat) or scored (classify); 0: all
    max_new_tokens: int = 96
    batch_size: int = 8
    compare_base: bool = True
    style: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in ZHUGE_STYLE.items()})


@dataclass
class Config:
    model: str = "gemma-3-270m"  # a HF folder, a hub id, or gemma-3-270m (offline, from its GGUF package)
    model_cache_dir: str | None = None  # where gemma-3-270m is converted to (default $KONGMING_DATA_DIR/models)
    task: Literal["chat", "classify"] = "chat"
    output_dir: str = "data/runs/run"
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _hints(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is Literal:
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if text not in args:
            raise ConfigError(f"{key}: must be one of {', '.join(map(str, args))}, got {value!r}")
        return text
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a mapping of {', '.join(_hints(tp))}, got {value!r}")
        return _build(tp, value, key + ".")
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: must be a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {value!r}")
        return value
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{key}: must be a number, got {value!r}")
        try:
            number = tp(value) if tp is float else int(str(value)) if isinstance(value, str) else value
        except ValueError:
            raise ConfigError(f"{key}: must be {'an integer' if tp is int else 'a number'}, got {value!r}") from None
        if tp is int and (not isinstance(number, int) or isinstance(number, bool)):
            raise ConfigError(f"{key}: must be an integer, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"{key}: must be a string, got {value!r}")
        return str(value)
    return value


def _build(cls: Any, data: dict[str, Any], prefix: str = "") -> Any:
    hints = _hints(cls)
    for key in data:
        if key not in hints:
            near = _suggest(str(key), list(hints))
            hint = f" (did you mean {prefix}{near}?)" if near else f"; known keys: {', '.join(hints)}"
            raise ConfigError(f"unknown key {prefix}{key}{hint}")
    return cls(**{k: _coerce(v, hints[k], prefix + k) for k, v in data.items()})


def field_type(key: str) -> Any:
    """The declared type of a dotted key such as `train.lr`."""
    tp: Any = Config
    done: list[str] = []
    for part in key.split("."):
        if typing.get_origin(tp) is dict:  # eval.style.particles: a key inside a free mapping
            tp = typing.get_args(tp)[1]
            continue
        hints = _hints(tp) if dataclasses.is_dataclass(tp) else {}
        if part not in hints:
            near = _suggest(part, list(hints))
            raise ConfigError(f"unknown key {key}" + (f" (did you mean {'.'.join([*done, near])}?)" if near else ""))
        tp = hints[part]
        done.append(part)
    return tp


def apply_override(data: dict[str, Any], item: str) -> None:
    """Set `a.b=value` in the raw config mapping; the value is read as YAML unless the key is a string."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r}: write key=value, e.g. train.lr=1e-4")
    tp = field_type(key)
    value: Any = raw if tp is str else yaml.safe_load(raw) if raw.strip() else None
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def validate(cfg: Config) -> Config:
    """Range checks that types cannot express; raises ConfigError naming the key."""
    t, lo, d = cfg.train, cfg.lora, cfg.data
    checks = [
        (not d.train, "data.train", "is required: a data file to train on"),
        (lo.r < 1, "lora.r", f"must be >= 1, got {lo.r}"),
        (lo.alpha <= 0, "lora.alpha", f"must be > 0, got {lo.alpha}"),
        (not 0 <= lo.dropout < 1, "lora.dropout", f"must be in [0, 1), got {lo.dropout}"),
        (not lo.target_modules, "lora.target_modules", "must name at least one module, e.g. q_proj,v_proj"),
        (t.lr <= 0, "train.lr", f"must be > 0, got {t.lr}"),
        (not 0 <= t.warmup_ratio < 1, "train.warmup_ratio", f"must be in [0, 1), got {t.warmup_ratio}"),
        (t.epochs <= 0 and not t.max_steps, "train.epochs", f"must be > 0 unless max_steps is set, got {t.epochs}"),
        (t.max_steps is not None and t.max_steps < 1, "train.max_steps", f"must be >= 1, got {t.max_steps}"),
        (t.batch_size < 1, "train.batch_size", f"must be >= 1, got {t.batch_size}"),
        (t.grad_accum < 1, "train.grad_accum", f"must be >= 1, got {t.grad_accum}"),
        (t.max_seq_len < 16, "train.max_seq_len", f"must be >= 16, got {t.max_seq_len}"),
        (t.eval_every < 0, "train.eval_every", f"must be >= 0, got {t.eval_every}"),
        (t.save_every < 0, "train.save_every", f"must be >= 0, got {t.save_every}"),
        (t.keep_checkpoints < 1, "train.keep_checkpoints", f"must be >= 1, got {t.keep_checkpoints}"),
        (t.max_grad_norm < 0, "train.max_grad_norm", f"must be >= 0 (0: no clipping), got {t.max_grad_norm}"),
        (not 0 <= d.val_split < 1, "data.val_split", f"must be in [0, 1), got {d.val_split}"),
        (not 0 <= d.mix_ratio < 1, "data.mix_ratio", f"must be in [0, 1), got {d.mix_ratio}"),
        (d.mix_ratio > 0 and not d.mix_path, "data.mix_path", "is required when data.mix_ratio > 0"),
        (cfg.task == "classify" and len(d.labels) < 2, "data.labels", "needs at least two label names"),
        (cfg.task == "classify" and "{text}" not in d.prompt, "data.prompt", "must contain {text}"),
        (cfg.eval.max_samples < 0, "eval.max_samples", f"must be >= 0, got {cfg.eval.max_samples}"),
        (not t.device.startswith(("auto", "cpu", "cuda", "mps")), "train.device", "must be auto, cpu, cuda[:N] or mps"),
    ]
    for bad, key, message in checks:
        if bad:
            raise ConfigError(f"{key}: {message}")
    return cfg


def from_dict(data: dict[str, Any]) -> Config:
    return validate(_build(Config, data))


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (or start from the defaults), apply `key=value` overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file (see finetune/configs/ for examples)")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a config is a mapping of keys (model, data, lora, train, ...)")
    for item in overrides:
        apply_override(data, item)
    try:
        return from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys to values; free mappings (eval.style) stay whole."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        nested = isinstance(v, dict) and k != "style"
        out.update(flat(v, f"{prefix}{k}.") if nested else {f"{prefix}{k}": v})
    return out


def changed_keys(old: Config, new: Config, allowed: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """`key: old -> new` for each dotted key that differs, except keys under one of `allowed`."""
    before, now = flat(to_dict(old)), flat(to_dict(new))
    return [
        f"{k}: {before.get(k)!r} -> {v!r}"
        for k, v in now.items()
        if before.get(k) != v and not any(k == a or k.startswith(a + ".") for a in allowed)
    ]


def dump_yaml(cfg: Config, header: str = "") -> str:
    body = yaml.safe_dump(to_dict(cfg), allow_unicode=True, sort_keys=False)
    return "".join(f"# {line}\n" for line in header.splitlines()) + body
