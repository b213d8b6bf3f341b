"""Training configs: YAML plus overrides, typed by the dataclasses, errors that name the key; every shipped config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from finetune.training.config import ALL_PROJECTIONS, Config, ConfigError, changed_keys, dump_yaml, load_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "finetune" / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))


def test_defaults_target_attention_and_mlp():
    cfg = load_config(None, ["data.train=x.jsonl"])
    assert isinstance(cfg, Config)
    assert set(cfg.lora.target_modules) == set(ALL_PROJECTIONS)
    assert {"q_proj", "v_proj", "gate_proj", "down_proj"} <= set(cfg.lora.target_modules)


def test_overrides_are_typed_by_the_dataclass(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  train: a.jsonl\ntrain:\n  lr: 1.0e-3\n  batch_size: 2\n", encoding="utf-8")
    cfg = load_config(
        path,
        [
            "train.lr=1e-4",  # YAML 1.1 reads this as a string; the float field makes it a number
            "train.max_steps=7",
            "train.gradient_checkpointing=yes",
            "lora.target_modules=q_proj,v_proj",
            "data.system=你是诸葛亮",
            "data.val=null",
            "train.bf16=false",
            "eval.style.particles=[之, 乎]",
        ],
    )
    assert cfg.train.lr == pytest.approx(1e-4) and cfg.train.batch_size == 2 and cfg.train.max_steps == 7
    assert cfg.train.gradient_checkpointing is True
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.data.system == "你是诸葛亮" and cfg.data.val is None
    assert cfg.train.bf16 == "false"
    assert cfg.eval.style["particles"] == ["之", "乎"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lrr=1", "unknown key train.lrr (did you mean train.lr?)"),
        ("lora.rank=4", "unknown key lora.rank (did you mean lora.r?)"),
        ("train.lr=fast", "train.lr: must be a number"),
        ("train.lr=0", "train.lr: must be > 0"),
        ("train.max_steps=1.5", "train.max_steps: must be an integer"),
        ("lora.r=0", "lora.r: must be in [1, 1024], got 0"),
        ("lora.dropout=1", "lora.dropout: must be in [0, 1)"),
        ("train.batching=zip", "train.batching: must be one of packing, length, none"),
        ("task=regress", "task: must be one of chat, classify"),
        ("train.gradient_checkpointing=maybe", "train.gradient_checkpointing: must be true or false"),
        ("data.mix_ratio=0.2", "data.mix_path: is required when data.mix_ratio > 0"),
        ("lora.target_modules=[]", "lora.target_modules: must name at least one module"),
        ("train.max_seq_len=8", "train.max_seq_len: must be >= 16"),
        ("nonsense", "write key=value"),
    ],
)
def test_errors_name_the_key(override: str, message: str):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.train=x.jsonl", override])
    assert message in str(err.value)


def test_file_errors_name_the_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  train: a\nlora:\n  alpha: -1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml: lora\.alpha: must be > 0"):
        load_config(bad)
    bad.write_text("- a list\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="a config is a mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"data\.train: is required"):
        load_config(None)


def test_resolved_yaml_round_trips(tmp_path: Path):
    cfg = load_config(None, ["data.train=x.jsonl", "train.lr=3e-4", "lora.r=4"])
    path = tmp_path / "config.yaml"
    path.write_text(dump_yaml(cfg, "finetune train x"), encoding="utf-8")
    assert path.read_text(encoding="utf-8").startswith("# finetune train x\n")
    assert load_config(path) == cfg
    other = load_config(path, ["train.lr=1e-4", "train.max_steps=5"])
    assert changed_keys(cfg, other) == ["train.lr: 0.0003 -> 0.0001", "train.max_steps: None -> 5"]
    assert changed_keys(cfg, other, frozenset({"train.lr", "train.max_steps"})) == []


def test_there_are_configs_for_the_three_experiments():
    names = {p.name for p in CONFIGS}
    assert {"zhuge_liang_gemma270m.yaml", "huanhuan_tiny.yaml", "waimai_classify.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_opens_with_its_command(path: Path):
    cfg = load_config(path)
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first == f"# finetune train finetune/configs/{path.name}"
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert raw["output_dir"] == cfg.output_dir
    assert cfg.output_dir.startswith("data/runs/")
    if cfg.task == "classify":
        assert cfg.data.val_split == pytest.approx(0.3) and cfg.data.split_seed == 100
    else:
        assert cfg.data.system, "a persona config sets the system prompt that serving must send too"
        assert cfg.eval.style


def test_data_paths_are_read_from_the_configs_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "train.jsonl").write_text("{}\n", encoding="utf-8")
    (exp / "cfg.yaml").write_text("data:\n  train: train.jsonl\n  val: null\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # elsewhere: the file is found beside the YAML, not in the current folder
    cfg = load_config("exp/cfg.yaml")
    assert cfg.data.train == str(exp / "train.jsonl") and cfg.data.val is None
    # an override is typed in a shell: the current folder's
    assert load_config("exp/cfg.yaml", ["data.train=other.jsonl"]).data.train == str(tmp_path / "other.jsonl")


def test_a_path_found_only_from_the_current_folder_is_used_and_said(tmp_path: Path, monkeypatch, caplog):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "cfg.yaml").write_text("data:\n  train: sets/train.jsonl\n", encoding="utf-8")
    (tmp_path / "sets").mkdir()
    (tmp_path / "sets" / "train.jsonl").write_text("{}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("WARNING"):
        cfg = load_config("configs/cfg.yaml")
    assert cfg.data.train == str(tmp_path / "sets" / "train.jsonl")
    assert "not found beside the config" in caplog.text and str(tmp_path / "configs" / "sets") in caplog.text


def test_a_missing_data_file_names_the_path_tried_and_the_fix(tmp_path: Path):
    from finetune.data.formats import DataError
    from finetune.training.trainset import load_conversations

    (tmp_path / "cfg.yaml").write_text("data:\n  train: nope/train.jsonl\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_conversations(load_config(tmp_path / "cfg.yaml"))
    message = str(err.value)
    assert str(tmp_path / "nope" / "train.jsonl") in message and "config's folder" in message
    assert "finetune data split" in message


def test_runs_go_under_the_data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KONGMING_DATA_DIR", str(tmp_path / "kdata"))
    cfg = load_config(None, ["data.train=x.jsonl", "output_dir=data/runs/a"])
    assert cfg.output_dir == str(tmp_path / "kdata" / "runs" / "a")
    assert load_config(None, ["data.train=x.jsonl", "output_dir=runs/b"]).output_dir == str(tmp_path / "kdata/runs/b")
    assert load_config(None, ["data.train=x.jsonl", f"output_dir={tmp_path}/c"]).output_dir == f"{tmp_path}/c"
    # files the data commands build under data/ come from the data folder too
    (tmp_path / "cfg.yaml").write_text("data:\n  train: data/persona/p/train.jsonl\n", encoding="utf-8")
    assert load_config(tmp_path / "cfg.yaml").data.train == str(tmp_path / "kdata/persona/p/train.jsonl")


@pytest.mark.parametrize("name", ["huanhuan_tiny.yaml", "waimai_classify.yaml"])
def test_shipped_configs_find_the_shared_data_from_any_folder(name: str, tmp_path: Path, monkeypatch):
    raw = yaml.safe_load((CONFIG_DIR / name).read_text(encoding="utf-8"))
    monkeypatch.chdir(tmp_path)
    cfg = load_config(CONFIG_DIR / name)
    if not Path(cfg.data.train).is_file():
        pytest.skip(f"shared data not available: {raw['data']['train']}")
    assert Path(cfg.data.train).is_absolute()
