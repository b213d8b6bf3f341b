"""`finetune train` under torchrun: two CPU processes (gloo) train the same steps as one, and only rank 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from finetune.training.config import load_config
from finetune.training.runio import checkpoints, read_metrics
from finetune.training.train import train

from .conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[2]
# Two ranks sum the same per-token losses as one process in another order (float32): the step losses agree to
# well under this, relative, after 8 AdamW steps at lr 1e-2 (measured: at most 5e-7).
TOLERANCE = 1e-4


def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run) if "loss" in r]


@pytest.mark.parametrize("batching", ["packing", "none"])
def test_two_processes_train_like_one(tiny_model: Path, chat_file: Path, tmp_path: Path, batching: str):
    extra = ("train.max_steps=8", "train.eval_every=4", "train.save_every=4", f"train.batching={batching}",
             "train.device=cpu", "train.grad_accum=2", "train.batch_size=3")  # fmt: skip
    single, double = tmp_path / "one", tmp_path / "two"
    train(load_config(None, tiny_overrides(tiny_model, chat_file, single, *extra)))
    (tmp_path / "tiny.yaml").write_text("task: chat\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "finetune.cli", "train", "tiny.yaml", *tiny_overrides(tiny_model, chat_file, double, *extra)]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    one, two = _losses(single), _losses(double)
    assert len(one) == len(two) == 8, "rank 0 alone writes the metrics: one line per step"
    for a, b in zip(one, two, strict=True):
        assert abs(a - b) <= TOLERANCE * abs(a), (one, two)
    assert one[-1] < one[0]
    rows = [r for r in read_metrics(double) if "loss" in r]
    assert [r["tokens"] for r in rows] == [r["tokens"] for r in read_metrics(single) if "loss" in r]
    vals = [r["val_loss"] for r in read_metrics(double) if "val_loss" in r]
    assert len(vals) == 2 and abs(vals[-1] - [r["val_loss"] for r in read_metrics(single) if "val_loss" in r][-1]) \
        <= TOLERANCE * vals[-1]
    assert [s for s, _ in checkpoints(double)] == [4, 8]
    assert (double / "adapter_model.safetensors").is_file() and (double / "loss_curve.png").is_file()
    summary = json.loads((double / "train_summary.json").read_text(encoding="utf-8"))
    assert summary["steps"] == 8
    assert not [p.name for p in double.iterdir() if p.name.startswith(".")], "no temporary files"
    assert proc.stdout.count("trained 8 steps") == 1  # rank 0 reports for both
