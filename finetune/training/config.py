"""The training config: a pydantic model per section (typed, ranges checked), one YAML per experiment + overrides."""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from finetune.training.paths import absolute_paths, in_data_dir, resolve_paths

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


def _fail(message: str, field: str | None = None) -> PydanticCustomError:
    """A validation error whose message is ours; `field` names the key when a section-level check raises it."""
    return PydanticCustomError("config", "{message}", {"message": message, "field": field})


def _null(value: Any) -> Any:
    """YAML's null spelled as a word in an override or a quoted value: null, none, ~."""
    return None if isinstance(value, str) and value.lower() in ("null", "none", "~") else value


def _number(value: Any) -> Any:
    if isinstance(value, bool):  # YAML reads `yes`/`on` as booleans; a number field must not take them as 1/0
        raise _fail(f"must be a number, got {value!r}")
    return value


def _integer(value: Any) -> Any:
    if isinstance(value, float):  # 1.0 in a count is a slip worth naming, not a number to round
        raise _fail(f"must be an integer, got {value!r}")
    return _number(value)


def _boolean(value: Any) -> Any:
    """true/false as YAML writes them, or yes/no/on/off/1/0 as words; never a number."""
    if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return value.lower() in ("true", "yes", "on", "1")
    if not isinstance(value, bool):
        raise _fail(f"must be true or false, got {value!r}")
    return value


def _comma_list(value: Any) -> Any:
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


def _bool_word(value: Any) -> Any:
    return str(value).lower() if isinstance(value, bool) else value


def _device(value: str) -> str:
    if not value.startswith(("auto", "cpu", "cuda", "mps")):
        raise _fail("must be auto, cpu, cuda[:N] or mps")
    return value


def _modules(value: list[str]) -> list[str]:
    if not value:
        raise _fail("must name at least one module, e.g. q_proj,v_proj")
    if any(not v.strip() for v in value):
        raise _fail("holds an empty module name: name modules such as q_proj,v_proj")
    return value


Int = Annotated[int, BeforeValidator(_integer)]
Float = Annotated[float, BeforeValidator(_number)]
Bool = Annotated[bool, BeforeValidator(_boolean)]
OptInt = Annotated[Int | None, BeforeValidator(_null)]
OptStr = Annotated[str | None, BeforeValidator(_null)]
StrList = Annotated[list[str], BeforeValidator(_comma_list)]  # `q_proj,v_proj` or a YAML list
Share = Annotated[Float, Field(ge=0, lt=1)]
Count = Annotated[Int, Field(ge=1)]
NonNeg = Annotated[Int, Field(ge=0)]
Positive = Annotated[Float, Field(gt=0)]


class _Section(BaseModel):
    # extra keys are errors (with a suggestion); numbers given for strings become strings, as YAML users expect
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


class DataConfig(_Section):
    train: str = ""  # a data file (alpaca/sharegpt/openai JSON or JSONL; CSV for task=classify)
    val: OptStr = None  # held-out file; when empty, val_split of train is held out
    format: Literal["auto", "alpaca", "sharegpt", "openai", "csv"] = "auto"
    val_split: Share = 0.1
    split_seed: Int = 42
    dedupe: Bool = True
    system: OptStr = None  # system prompt for conversations that bring none
    mix_path: OptStr = None  # augmentation: general or RAG-grounded dialogue mixed into train
    mix_ratio: Share = 0.0  # share of mix_path examples in the training set (0.2: 80/20)
    max_examples: OptInt = None  # cap the training set (smoke runs)
    text_column: str = "review"  # task=classify: CSV columns, label names by label value, and the prompt
    label_column: str = "label"
    labels: StrList = Field(default_factory=lambda: ["差评", "好评"])
    prompt: str = "判断这条外卖评论是好评还是差评，只回答“好评”或“差评”。\n评论：{text}"

    @model_validator(mode="after")
    def _mix_needs_a_file(self) -> DataConfig:
        if self.mix_ratio > 0 and not self.mix_path:
            raise _fail("is required when data.mix_ratio > 0", "mix_path")
        return self


class LoraConfig(_Section):
    r: Annotated[Count, Field(le=1024)] = 8  # a rank above 1024 is no low-rank adapter (and would not fit in memory)
    alpha: Annotated[Int, Field(gt=0)] = 16
    dropout: Share = 0.05
    target_modules: Annotated[StrList, AfterValidator(_modules)] = Field(default_factory=lambda: list(ALL_PROJECTIONS))
    qlora: Bool = False  # 4-bit base through bitsandbytes; CUDA only


class TrainConfig(_Section):
    lr: Positive = 2e-4
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: Share = 0.03
    epochs: Float = 1.0
    max_steps: Annotated[Count | None, BeforeValidator(_null)] = None  # overrides epochs when set
    batch_size: Count = 4  # sequences per micro-batch (packed rows of max_seq_len when batching=packing)
    grad_accum: Count = 1
    max_seq_len: Annotated[Int, Field(ge=16)] = 512
    gradient_checkpointing: Bool = False
    # auto: bf16 where the GPU supports it, float32 on CPU
    bf16: Annotated[Literal["auto", "true", "false"], BeforeValidator(_bool_word)] = "auto"
    seed: Int = 42
    batching: Literal["packing", "length", "none"] = "packing"
    weight_decay: Float = 0.0
    max_grad_norm: Annotated[Float, Field(ge=0, description="0: no clipping")] = 1.0
    eval_every: NonNeg = 50  # steps between validation losses (0: only at the end)
    val_max_examples: OptInt = 200
    save_every: NonNeg = 100  # steps between checkpoints (0: only at the end)
    keep_checkpoints: Count = 2
    device: Annotated[str, AfterValidator(_device)] = "auto"  # auto | cpu | cuda | cuda:N | mps

    @model_validator(mode="after")
    def _epochs_or_steps(self) -> TrainConfig:
        if self.epochs <= 0 and not self.max_steps:
            raise _fail(f"must be > 0 unless max_steps is set, got {self.epochs}", "epochs")
        return self


class EvalConfig(_Section):
    max_samples: NonNeg = 50  # held-out pairs generated (chat) or scored (classify); 0: all
    max_new_tokens: Int = 96
    batch_size: Int = 8
    compare_base: Bool = True
    style: dict[str, StrList] = Field(default_factory=lambda: {k: list(v) for k, v in ZHUGE_STYLE.items()})


class Config(_Section):
    model: str = "gemma-3-270m"  # a HF folder, a hub id, or gemma-3-270m (offline, from its GGUF package)
    model_cache_dir: OptStr = None  # where gemma-3-270m is converted to (default $KONGMING_DATA_DIR/models)
    task: Literal["chat", "classify"] = "chat"
    chat_template: OptStr = None  # where the base has none: chatml, gemma, a Jinja template or a .jinja file
    output_dir: str = "data/runs/run"
    data: DataConfig = Field(default_factory=lambda: DataConfig())
    lora: LoraConfig = Field(default_factory=lambda: LoraConfig())
    train: TrainConfig = Field(default_factory=lambda: TrainConfig())
    eval: EvalConfig = Field(default_factory=lambda: EvalConfig())

    @model_validator(mode="after")
    def _across_sections(self) -> Config:
        d = self.data
        if not d.train:
            raise _fail("is required: a data file to train on", "data.train")
        if self.task == "classify" and len(d.labels) < 2:
            raise _fail("needs at least two label names", "data.labels")
        if self.task == "classify" and "{text}" not in d.prompt:
            raise _fail("must contain {text}", "data.prompt")
        return self


def _unwrap(tp: Any) -> Any:
    """The class or generic under Annotated[...] and `X | None`."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
            continue
        union = origin in (typing.Union, types.UnionType)
        inner = [a for a in typing.get_args(tp) if a is not type(None)] if union else []
        if len(inner) != 1:
            return tp
        tp = inner[0]


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def field_type(key: str) -> Any:
    """The declared type of a dotted key such as `train.lr`."""
    tp: Any = Config
    done: list[str] = []
    for part in key.split("."):
        if typing.get_origin(tp) is dict:  # eval.style.particles: a key inside a free mapping
            tp = _unwrap(typing.get_args(tp)[1])
            continue
        fields = tp.model_fields if _is_section(tp) else {}
        if part not in fields:
            near = _suggest(part, list(fields))
            raise ConfigError(f"unknown key {key}" + (f" (did you mean {'.'.join([*done, near])}?)" if near else ""))
        tp = _unwrap(fields[part].annotation)
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


def _field_at(loc: tuple[str | int, ...]) -> tuple[type[BaseModel] | None, Any]:
    """(the section holding the last key of `loc`, that key's FieldInfo) where `loc` names a section field."""
    section: Any = Config
    for i, part in enumerate(loc):
        fields = section.model_fields if _is_section(section) else {}
        if part not in fields:
            return (section if _is_section(section) and i == len(loc) - 1 else None), None
        if i == len(loc) - 1:
            return section, fields[part]
        section = _unwrap(fields[part].annotation)
    return None, None


def _constraints(tp: Any) -> dict[str, Any]:
    """The ge/gt/lt/le bounds declared on a field (its metadata or the Annotated types inside it)."""
    found: dict[str, Any] = {}
    for m in [*getattr(tp, "metadata", []), *typing.get_args(getattr(tp, "annotation", tp))]:
        for k in ("ge", "gt", "lt", "le"):
            if getattr(m, k, None) is not None:
                found.setdefault(k, getattr(m, k))
        if not isinstance(m, str | int | float):
            found = {**_constraints(m), **found}
    return found


def _bounds(c: dict[str, Any]) -> str:
    """`>= 1`, `> 0` or `in [0, 1)`."""
    low = f"[{c['ge']}" if "ge" in c else f"({c['gt']}" if "gt" in c else None
    high = f"{c['lt']})" if "lt" in c else f"{c['le']}]" if "le" in c else None
    if low and high:
        return f"in {low}, {high}"
    if low:
        return f">= {c['ge']}" if "ge" in c else f"> {c['gt']}"
    return f"< {c['lt']}" if "lt" in c else f"<= {c['le']}"


_KINDS = {
    "int_parsing": "must be an integer", "int_from_float": "must be an integer", "int_type": "must be an integer",
    "float_parsing": "must be a number", "float_type": "must be a number",
    "bool_parsing": "must be true or false", "bool_type": "must be true or false",
    "string_type": "must be a string", "list_type": "must be a list", "dict_type": "must be a mapping",
}  # fmt: skip


def _message(err: Any) -> str:
    """One pydantic error as `key: what it accepts, got value`."""
    loc = tuple(err["loc"])
    ctx = err.get("ctx") or {}
    names = [str(p) for p in loc if isinstance(p, str)]
    key = ".".join(names) + "".join(f"[{p}]" for p in loc if isinstance(p, int))
    got = f", got {err['input']!r}"
    kind = err["type"]
    if kind == "config":
        key = ".".join(n for n in (key, ctx.get("field")) if n)
        return f"{key}: {ctx['message']}"
    if kind == "extra_forbidden":
        section, _ = _field_at(loc)
        known = list(section.model_fields) if section is not None else []
        near = _suggest(names[-1], known)
        prefix = ".".join([*names[:-1], ""])
        hint = f" (did you mean {prefix}{near}?)" if near else f"; known keys: {', '.join(known)}"
        return f"unknown key {key}{hint}"
    if kind == "literal_error":
        allowed = ", ".join(re.findall(r"'([^']*)'", ctx["expected"]))
        return f"{key}: must be one of {allowed}{got}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        _, info = _field_at(loc)
        note = f" ({info.description})" if info is not None and info.description else ""
        return f"{key}: must be {_bounds({**_constraints(info), **ctx})}{note}{got}"
    if kind == "model_type":
        _, info = _field_at(loc)
        inner: Any = _unwrap(info.annotation) if info is not None else None
        fields = ", ".join(inner.model_fields) if _is_section(inner) else ""
        return f"{key}: must be a mapping of {fields}{got}"
    if kind in _KINDS:
        return f"{key}: {_KINDS[kind]}{got}"
    return f"{key}: {err['msg']}"


def from_dict(data: dict[str, Any]) -> Config:
    """The config for a raw mapping (YAML with overrides applied); the first problem becomes a ConfigError."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_message(exc.errors()[0])) from None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (or start from the defaults), apply `key=value` overrides, validate.

    Relative data paths in the YAML are read from its folder (see paths.py); a relative output_dir goes under the
    data folder ($KONGMING_DATA_DIR: `data/runs/x` and `runs/x` both become `$KONGMING_DATA_DIR/runs/x`)."""
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
        resolve_paths(data, path.parent)  # the YAML's own paths; an override's are the current folder's
    for item in overrides:
        apply_override(data, item)
    try:
        cfg = from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None
    cfg.output_dir = str(in_data_dir(cfg.output_dir))
    absolute_paths(cfg.data)
    return cfg


def to_dict(cfg: Config) -> dict[str, Any]:
    return cfg.model_dump()


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
