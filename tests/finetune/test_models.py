"""Base model resolution: local folders as they are, the offline gemma default converted once, hub ids."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from finetune.models.base import DEFAULT_MODEL, ModelError, default_cache_dir, resolve_model


def test_a_local_folder_is_used_as_is(tiny_model: Path, tmp_path: Path):
    assert resolve_model(tiny_model, tmp_path) == tiny_model
    assert resolve_model(str(tiny_model), tmp_path) == tiny_model
    with pytest.raises(ModelError, match=r"has no config\.json"):
        resolve_model(tmp_path, tmp_path)
    with pytest.raises(ModelError, match="no such folder"):
        resolve_model(str(tmp_path / "missing" / "model"), tmp_path)


def test_the_default_is_converted_once_and_then_reused(tmp_path: Path):
    cached = tmp_path / DEFAULT_MODEL
    cached.mkdir()
    (cached / "config.json").write_text("{}")
    assert resolve_model(DEFAULT_MODEL, tmp_path) == cached  # no conversion when the folder is there


def test_default_cache_follows_the_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("KONGMING_DATA_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path / "models"
    monkeypatch.delenv("KONGMING_DATA_DIR")
    assert default_cache_dir() == Path("data/models")


def test_a_hub_id_that_cannot_be_fetched_says_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelError, match=r"cannot get 'kongming-tests/no-such-model' from the model hub.*local folder"):
        resolve_model("kongming-tests/no-such-model", tmp_path)


@pytest.mark.slow
@pytest.mark.integration
def test_gemma_converts_loads_and_trains_a_step(tmp_path: Path):
    """The real offline default: GGUF -> HF folder (or the one already converted under data/models), its chat
    template, and one LoRA step through the training loop. About a minute on a 2-core CPU."""
    import json

    from transformers import AutoTokenizer

    from finetune.models.template import GEMMA_CHAT_TEMPLATE, end_of_turn_ids
    from finetune.training.config import load_config
    from finetune.training.train import train

    cache = default_cache_dir() if (default_cache_dir() / DEFAULT_MODEL).is_dir() else tmp_path / "models"
    path = resolve_model(DEFAULT_MODEL, cache)
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and "quantization_config" not in config
    tok = AutoTokenizer.from_pretrained(path)
    assert tok.chat_template == GEMMA_CHAT_TEMPLATE
    assert end_of_turn_ids(tok) == [tok.convert_tokens_to_ids("<end_of_turn>"), tok.eos_token_id]
    data = tmp_path / "d.jsonl"
    turns = [
        {"role": "user", "content": "先生何以知今日大雾？"},
        {"role": "assistant", "content": "亮于三日前已算定。"},
    ]
    data.write_text((json.dumps({"messages": turns}, ensure_ascii=False) + "\n") * 4, encoding="utf-8")
    overrides = [f"model_cache_dir={cache}", f"data.train={data}", "data.dedupe=false", "data.val_split=0",
                 f"output_dir={tmp_path / 'run'}", "train.max_steps=1", "lora.r=4", "lora.target_modules=q_proj,v_proj",
                 "train.max_seq_len=64", "train.device=cpu"]  # fmt: skip
    result = train(load_config(None, overrides))
    assert (
        result.steps == 1 and result.train_loss is not None and os.path.isfile(tmp_path / "run" / "adapter_config.json")
    )
