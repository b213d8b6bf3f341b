"""LoRA training on a tiny random model: loss falls, outputs and metrics are complete, runs resume exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finetune.training.config import load_config
from finetune.training.runio import checkpoints, read_metrics
from finetune.training.train import TrainError, train

from .conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[2]


def _adapter(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "adapter_model.safetensors"))


def test_loss_goes_down_on_a_memorisation_set(tiny_model: Path, chat_file: Path, tmp_path: Path):
    out = tmp_path / "run"
    result = train(load_config(None, tiny_overrides(tiny_model, chat_file, out, "train.max_steps=30")))
    records = read_metrics(out)
    losses = [r["loss"] for r in records if "loss" in r]
    vals = [r["val_loss"] for r in records if "val_loss" in r]
    assert len(losses) == 30 and result.steps == 30
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert vals[-1] < vals[0]  # the validation set holds the same pairs: it is memorised too


def test_run_directory_and_metrics(tiny_model: Path, chat_file: Path, tmp_path: Path):
    out = tmp_path / "run"
    result = train(load_config(None, tiny_overrides(tiny_model, chat_file, out)))
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "config.yaml", "metrics.jsonl", "train_summary.json", "loss_curve.png"):  # fmt: skip
        assert (out / name).is_file(), name
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temporary files left behind"
    resolved = (out / "config.yaml").read_text(encoding="utf-8")
    assert resolved.startswith("# finetune train ") and load_config(out / "config.yaml").output_dir == str(out)
    steps = [r for r in read_metrics(out) if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 13))
    for r in steps:
        assert r["tokens"] > 0 and r["tokens_per_s"] > 0 and r["peak_mem_mb"] > 0 and r["label_tokens"] > 0
        assert r["lr"] > 0 and 0 < r["epoch"]
    assert [r["step"] for r in read_metrics(out) if "val_loss" in r] == [4, 8, 12]
    assert [s for s, _ in checkpoints(out)] == [8, 12]  # keep_checkpoints=2
    summary = json.loads((out / "train_summary.json").read_text(encoding="utf-8"))
    assert summary["steps"] == 12 and summary["trainable_parameters"] > 0 and summary["tokens_per_s"] > 0
    assert result.tokens_per_s == summary["tokens_per_s"]


@pytest.mark.parametrize("batching", ["length", "none"])
def test_other_batchings_and_accumulation_train(tiny_model: Path, chat_file: Path, tmp_path: Path, batching: str):
    extra = (f"train.batching={batching}", "train.grad_accum=2", "train.max_steps=3", "train.eval_every=0")
    result = train(load_config(None, tiny_overrides(tiny_model, chat_file, tmp_path / "run", *extra)))
    assert result.steps == 3 and result.val_loss is not None


def test_interrupted_run_resumes_to_the_same_adapter(tiny_model: Path, chat_file: Path, tmp_path: Path):
    straight = train(load_config(None, tiny_overrides(tiny_model, chat_file, tmp_path / "a", "lora.dropout=0.1")))
    cfg = load_config(None, tiny_overrides(tiny_model, chat_file, tmp_path / "b", "lora.dropout=0.1"))
    first = train(cfg, stop_after=6)
    assert first.steps == 6 and not (tmp_path / "b" / "adapter_config.json").exists()
    second = train(cfg)
    assert second.resumed_from == 6 and second.steps == 12
    a, b = _adapter(tmp_path / "a"), _adapter(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all((a[k] - b[k]).abs().max() < 1e-6 for k in a)
    steps = [r["step"] for r in read_metrics(tmp_path / "b") if "loss" in r]
    assert steps == list(range(1, 13))
    assert second.train_loss == pytest.approx(straight.train_loss, rel=1e-5)


def test_sigkill_mid_run_then_rerun_resumes(tiny_model: Path, chat_file: Path, tmp_path: Path):
    out = tmp_path / "run"
    args = tiny_overrides(tiny_model, chat_file, out, "train.max_steps=400", "train.save_every=5",
                          "train.eval_every=0", "train.max_seq_len=256", "data.format=auto")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = tmp_path / "train.log"
    command = [sys.executable, "-m", "finetune.cli", "train", str(ROOT / "finetune/configs/huanhuan_tiny.yaml"), *args]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(checkpoints(out)) < 2 and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before it could be killed: {log.read_text()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    done = checkpoints(out)[-1][0]
    assert 0 < done < 400 and not (out / "adapter_config.json").exists()
    for _, ckpt in checkpoints(out):  # every checkpoint a reader can find is whole
        assert {"adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt", "state.json"} <= {
            p.name for p in ckpt.iterdir()
        }
    # what a writer killed mid-write leaves (under temporary names, which no reader looks at)
    half = out / "checkpoints" / f".step-{done + 5:06d}.k1ll3d00"
    half.mkdir()
    (half / "adapter_model.safetensors").write_bytes(b"half")
    (out / ".config.yaml.k1ll3d00").write_text("half")
    (out / ".final").mkdir()
    assert checkpoints(out)[-1][0] == done
    result = train(load_config(ROOT / "finetune/configs/huanhuan_tiny.yaml", args))
    assert result.resumed_from is not None and result.resumed_from >= done and result.steps == 400
    steps = [r["step"] for r in read_metrics(out) if "loss" in r]
    assert steps == list(range(1, 401))
    leftovers = [p.name for d in (out, out / "checkpoints") for p in d.iterdir() if p.name.startswith(".")]
    assert leftovers == [] and (out / "adapter_config.json").is_file()


def test_tidy_puts_back_a_checkpoint_that_was_being_replaced(tmp_path: Path):
    from finetune.training.runio import tidy

    ckpts = tmp_path / "checkpoints"
    old = ckpts / ".step-000008.old"  # the kill came between moving it aside and renaming the new one in
    old.mkdir(parents=True)
    (old / "state.json").write_text("{}")
    (ckpts / ".step-000012.abcd_123").mkdir()
    (tmp_path / ".metrics.jsonl.x1y2z3w4").write_text("")
    (tmp_path / ".gitignore").write_text("*")  # not ours: kept
    assert sorted(tidy(tmp_path)) == [".metrics.jsonl.x1y2z3w4", ".step-000012.abcd_123"]
    assert [s for s, _ in checkpoints(tmp_path)] == [8]
    assert (tmp_path / ".gitignore").is_file()


def test_tidy_clears_what_a_killed_atomic_write_left(tmp_path: Path):
    from finetune.training.runio import tidy, write_text

    write_text(tmp_path / "config.yaml", "a: 1\n")  # through ingest.fsio: a ".config.yaml.XXXXXXXX.part" first
    (tmp_path / ".config.yaml.k3j_9x2q.part").write_text("a: ")  # a writer killed before its rename
    (tmp_path / ".metrics.jsonl.q1w2e3r4.part").write_text("")
    assert sorted(tidy(tmp_path)) == [".config.yaml.k3j_9x2q.part", ".metrics.jsonl.q1w2e3r4.part"]
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_a_changed_experiment_is_not_resumed(tiny_model: Path, chat_file: Path, tmp_path: Path):
    out = tmp_path / "run"
    train(load_config(None, tiny_overrides(tiny_model, chat_file, out)), stop_after=4)
    with pytest.raises(TrainError, match=r"different experiment \(train\.lr: 0\.01 -> 0\.02\).*--restart"):
        train(load_config(None, tiny_overrides(tiny_model, chat_file, out, "train.lr=0.02")))
    more = train(load_config(None, tiny_overrides(tiny_model, chat_file, out, "train.max_steps=16")))
    assert more.resumed_from == 4 and more.steps == 16  # a longer run of the same experiment resumes
    fresh = train(load_config(None, tiny_overrides(tiny_model, chat_file, out, "train.lr=0.02")), restart=True)
    assert fresh.resumed_from is None


def test_clear_errors_before_any_work(tiny_model: Path, chat_file: Path, tmp_path: Path):
    with pytest.raises(TrainError, match=r"QLoRA .* needs a CUDA GPU; set lora\.qlora=false"):
        train(load_config(None, tiny_overrides(tiny_model, chat_file, tmp_path / "q", "lora.qlora=true",
                                               "train.device=cpu")))  # fmt: skip
    with pytest.raises(TrainError, match=r"lora\.target_modules: 'c_attn' not a layer of this model"):
        train(load_config(None, tiny_overrides(tiny_model, chat_file, tmp_path / "t", "lora.target_modules=c_attn")))
    from finetune.data.formats import DataError

    with pytest.raises(DataError, match="no such file"):
        train(load_config(None, tiny_overrides(tiny_model, tmp_path / "nope.jsonl", tmp_path / "d")))


def test_classify_trains_and_evaluates_from_a_messages_file(tiny_model: Path, tmp_path: Path):
    from finetune.evaluation.evaluate import evaluate_run

    data = tmp_path / "reviews.jsonl"
    rows = [(f"好吃，送餐快{i}", "好评") for i in range(20)] + [(f"太慢了，菜都凉了{i}", "差评") for i in range(30)]
    data.write_text("".join(json.dumps({"messages": [
        {"role": "system", "content": "你是一位外卖评论好评差评评论专家。"}, {"role": "user", "content": q},
        {"role": "assistant", "content": a}]}, ensure_ascii=False) + "\n" for q, a in rows), encoding="utf-8")
    run = tmp_path / "run"
    overrides = tiny_overrides(tiny_model, data, run, "task=classify", "data.val_split=0.3", "data.split_seed=100",
                               "train.max_steps=20", "eval.max_samples=0", "train.max_seq_len=160")  # fmt: skip
    train(load_config(None, overrides))
    c = evaluate_run(run, base=False)["classification"]
    assert (c["train_rows"], c["test_rows"]) == (35, 15)
    assert c["tuned"]["confusion_matrix"]["labels"] == ["差评", "好评"]
    assert c["tuned"]["accuracy"] == pytest.approx(1.0) and "tfidf_logreg" in c
