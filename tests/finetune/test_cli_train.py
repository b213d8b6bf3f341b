"""`finetune train | eval | merge` end to end on a tiny model: outputs, summaries, exit codes, fast help."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from finetune.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main

from .conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[2]


def test_model_commands_help_imports_nothing_heavy():
    code = (
        "import sys\nfrom finetune.cli import main\n"
        "for argv in (['train', '--help'], ['eval', '--help'], ['merge', '--help'], ['export', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "print('HEAVY', [m for m in ('torch', 'transformers', 'peft', 'matplotlib', 'sklearn') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip().splitlines()[-1] == "HEAVY []"
    assert "KEY=VALUE" in out.stdout and "--out" in out.stdout


def test_train_eval_merge_end_to_end(tiny_model: Path, chat_file: Path, tmp_path: Path, capsys):
    config = tmp_path / "exp.yaml"
    config.write_text(
        "# finetune train exp.yaml\nmodel: gemma-3-270m\ndata:\n  train: missing.jsonl\n", encoding="utf-8"
    )
    run = tmp_path / "run"
    assert main(["train", str(config), *tiny_overrides(tiny_model, chat_file, run, "train.max_steps=20")]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("trained 20 steps: train loss ") and str(run) in out
    assert "tokens/s" in out

    assert main(["eval", str(run), "--max-samples", "3"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "val loss (tuned)" in out and "val loss (base)" in out and "BLEU" in out and "ROUGE-L" in out
    assert json.loads((run / "eval.json").read_text(encoding="utf-8"))["generation"]["held_out"] == 3

    merged = tmp_path / "merged"
    assert main(["merge", str(run), "--out", str(merged)]) == EXIT_OK
    assert f"-> {merged}" in capsys.readouterr().out
    assert (merged / "model.safetensors").is_file()
    assert main(["merge", str(run), "--out", str(merged)]) == EXIT_FAILED
    assert "--force" in capsys.readouterr().err

    # a second `train` of a finished run resumes from its last checkpoint and has nothing left to do
    assert main(["train", str(config), *tiny_overrides(tiny_model, chat_file, run, "train.max_steps=20")]) == EXIT_OK
    assert "resumed from step 20" in capsys.readouterr().out


def test_exit_codes_and_messages(tiny_model: Path, chat_file: Path, tmp_path: Path, capsys):
    assert main(["train", str(tmp_path / "none.yaml")]) == EXIT_USAGE
    assert "no such config file" in capsys.readouterr().err
    config = ROOT / "finetune/configs/huanhuan_tiny.yaml"
    assert main(["train", str(config), "train.lrr=1"]) == EXIT_USAGE
    assert "unknown key train.lrr (did you mean train.lr?)" in capsys.readouterr().err
    assert main(["train", str(config), *tiny_overrides(tiny_model, chat_file, tmp_path / "q", "lora.qlora=true",
                                                       "train.device=cpu")]) == EXIT_FAILED  # fmt: skip
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert main(["eval", str(tmp_path)]) == EXIT_FAILED
    assert "no config.yaml in" in capsys.readouterr().err
    assert main(["merge", str(tmp_path), "--out", str(tmp_path / "m")]) == EXIT_FAILED
    assert "no adapter_config.json in" in capsys.readouterr().err
