"""Merging: the merged model computes what base + adapter computes, and is a plain HF folder with its template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.models.merge import MergeError, merge_run
from finetune.training.config import load_config
from finetune.training.train import train

from .conftest import tiny_overrides


@pytest.fixture(scope="module")
def trained(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from .conftest import write_pairs

    tmp = tmp_path_factory.mktemp("merge")
    data = write_pairs(tmp / "pairs.jsonl")
    run = tmp / "run"
    train(load_config(None, tiny_overrides(tiny_model, data, run, "train.max_steps=10")))
    return run


def test_merged_logits_equal_base_plus_adapter(trained: Path, tiny_model: Path, tmp_path: Path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from finetune.models.base import quiet_peft

    out = merge_run(trained, tmp_path / "merged")
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    with quiet_peft():
        adapted = PeftModel.from_pretrained(base, trained).eval()
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    torch.manual_seed(0)
    ids = torch.randint(0, base.config.vocab_size, (3, 40))
    with torch.no_grad():
        want = adapted(input_ids=ids).logits
        got = merged(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)(input_ids=ids).logits
    assert (want - plain).abs().max() > 1e-2, "the adapter must change something for the test to mean anything"
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_merged_folder_is_a_standard_hf_model(trained: Path, tmp_path: Path):
    from transformers import AutoTokenizer

    from finetune.models.template import DEFAULT_CHAT_TEMPLATE, encode_chat

    out = merge_run(trained, tmp_path / "merged")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
            "merge.json", "finetune_config.yaml"} <= names  # fmt: skip
    assert not any(n.startswith("adapter") for n in names)
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["architectures"] == ["Qwen2ForCausalLM"]
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template == DEFAULT_CHAT_TEMPLATE  # vLLM renders the training template
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [tok.convert_tokens_to_ids("<|im_end|>")]
    messages = [{"role": "user", "content": "先生何以知今日大雾？"}]
    assert encode_chat(tok, messages) == encode_chat(AutoTokenizer.from_pretrained(trained), messages)
    provenance = json.loads((out / "merge.json").read_text())
    assert provenance["adapter"] == str(trained.resolve()) and provenance["dtype"] == "float32"


def test_merge_a_checkpoint_and_dtype(trained: Path, tmp_path: Path):
    from finetune.training.runio import checkpoints

    _, ckpt = checkpoints(trained)[-1]
    out = merge_run(ckpt, tmp_path / "m16", dtype="bfloat16")
    assert json.loads((out / "merge.json").read_text())["dtype"] == "bfloat16"


def test_merge_errors_name_the_file_and_the_fix(trained: Path, tmp_path: Path):
    with pytest.raises(MergeError, match=r"no adapter_config\.json in .*written by `finetune train`"):
        merge_run(tmp_path, tmp_path / "out")
    with pytest.raises(MergeError, match="no such directory"):
        merge_run(tmp_path / "nope", tmp_path / "out")
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (lonely / name).write_bytes((trained / name).read_bytes())
    with pytest.raises(MergeError, match=r"no config\.yaml in .*reads the base model from the run's resolved config"):
        merge_run(lonely, tmp_path / "out")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(MergeError, match=r"exists and is not empty.*--force"):
        merge_run(trained, busy)
    assert merge_run(trained, busy, force=True) == busy and not (busy / "x").exists()


def test_export_ships_a_small_adapter_that_computes_the_same(trained: Path, tiny_model: Path, tmp_path: Path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from finetune.models.base import quiet_peft
    from finetune.models.export import EXPORT_FILE, ExportError, export_run

    (trained / "eval.json").write_text("{}")  # as `finetune eval` leaves it
    out = export_run(trained, tmp_path / "shipped")
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "config.yaml", "metrics.jsonl", "eval.json",
            EXPORT_FILE} <= names  # fmt: skip
    assert not any(n.startswith("tokenizer") for n in names) and "checkpoints" not in names
    size = (out / "adapter_model.safetensors").stat().st_size
    assert size < 0.6 * (trained / "adapter_model.safetensors").stat().st_size  # float16 of a float32 run
    record = json.loads((out / EXPORT_FILE).read_text())
    assert record["dtype"] == "float16" and record["source"] == str(trained)

    def logits(adapter: Path) -> torch.Tensor:
        base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
        with quiet_peft():
            model = PeftModel.from_pretrained(base, adapter).eval()
        with torch.no_grad():
            return model(input_ids=ids).logits

    ids = torch.randint(0, 500, (2, 32), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(logits(out), logits(trained), atol=2e-2, rtol=1e-3)
    merged = merge_run(out, tmp_path / "merged")  # the shipped folder carries the run's config: it merges alone
    assert (merged / "model.safetensors").is_file()
    with pytest.raises(ExportError, match="dtype must be one of"):
        export_run(trained, tmp_path / "x", dtype="int8")
