"""`finetune train` into an output folder that is read-only or fills up: an error that names the path, nothing
half-written under a real name, and a rerun that finishes once there is room."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune.cli import EXIT_FAILED, main
from finetune.training.config import load_config
from finetune.training.runio import checkpoints, read_metrics
from finetune.training.train import train

from ..faults.helpers import fill, lockable_dir, tmpfs
from .conftest import tiny_overrides


def test_read_only_output_dir_is_an_error_naming_it(tiny_model: Path, chat_file: Path, tmp_path: Path, capsys):
    with lockable_dir(tmp_path / "ro") as lock:
        lock()
        out = tmp_path / "ro" / "run"
        assert main(["train", str(tmp_path / "none.yaml"), *tiny_overrides(tiny_model, chat_file, out)]) == 2
        capsys.readouterr()
        config = Path(__file__).resolve().parents[2] / "finetune/configs/huanhuan_tiny.yaml"
        assert main(["train", str(config), *tiny_overrides(tiny_model, chat_file, out)]) == EXIT_FAILED
        err = capsys.readouterr().err
        assert str(out) in err and "output_dir=" in err and "Traceback" not in err, err


def test_full_disk_mid_run_names_the_path_and_the_rerun_finishes(tiny_model: Path, chat_file: Path, tmp_path: Path):
    with tmpfs(tmp_path / "disk", "16m") as disk:
        out = disk / "run"
        cfg = load_config(None, tiny_overrides(tiny_model, chat_file, out))
        ballast = fill(disk, leave=48 * 1024)  # room for the config and the metrics, not for a checkpoint
        with pytest.raises(RuntimeError) as err:  # a RunError (TrainError's base): the CLI exits 1 with it
            train(cfg)
        assert str(out) in str(err.value) and "free some space" in str(err.value)
        assert checkpoints(out) == [] and not (out / "adapter_config.json").exists()
        assert [p.name for d in (out, out / "checkpoints") if d.is_dir() for p in d.iterdir()
                if p.name.startswith(".")] == []  # fmt: skip
        ballast.unlink()
        result = train(cfg)
        assert result.steps == 12 and (out / "adapter_config.json").is_file()
        assert [r["step"] for r in read_metrics(out) if "loss" in r] == list(range(1, 13))
