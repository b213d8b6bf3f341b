"""Training shows progress: a line per step off a terminal, a bar on one, the loss curve as it goes and on Ctrl-C."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from finetune.training.config import load_config
from finetune.training.progress import TrainProgress, duration
from finetune.training.runio import read_metrics
from finetune.training.train import train

from .conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^step (\d+)/12 \(\d+%\) loss \d+\.\d{4} lr \d\.\d\de[-+]\d\d \d+ tokens/s eta (\d+s|\d+m\d\ds)$")


def test_a_line_per_step_when_not_a_terminal(tiny_model: Path, chat_file: Path, tmp_path: Path, capsys):
    out = tmp_path / "run"
    train(load_config(None, tiny_overrides(tiny_model, chat_file, out)))
    err = capsys.readouterr().err.splitlines()
    steps = [LINE.match(line) for line in err if line.startswith("step ") and "val loss" not in line]
    assert all(steps), [line for line in err if line.startswith("step ")]
    assert [int(m.group(1)) for m in steps if m] == list(range(1, 13))
    assert [line for line in err if re.match(r"^step \d+: val loss \d+\.\d{4}$", line)], "validation losses shown"


def test_metrics_keep_their_keys_and_add_eta(tiny_model: Path, chat_file: Path, tmp_path: Path):
    out = tmp_path / "run"
    train(load_config(None, tiny_overrides(tiny_model, chat_file, out)))
    steps = [r for r in read_metrics(out) if "loss" in r]
    for r in steps:
        assert {"step", "epoch", "loss", "lr", "tokens", "tokens_per_s", "seconds"} <= set(r)
        assert r["total_steps"] == 12 and r["eta_s"] >= 0
    assert steps[-1]["eta_s"] == 0


def test_loss_curve_is_drawn_while_training(tiny_model: Path, chat_file: Path, tmp_path: Path):
    out = tmp_path / "run"
    train(load_config(None, tiny_overrides(tiny_model, chat_file, out, "train.save_every=0")), stop_after=5)
    assert (out / "loss_curve.png").is_file() and not (out / "adapter_config.json").exists()


def test_ctrl_c_leaves_the_loss_curve(tiny_model: Path, chat_file: Path, tmp_path: Path):
    out = tmp_path / "run"
    args = tiny_overrides(tiny_model, chat_file, out, "train.max_steps=2000", "train.eval_every=0",
                          "train.save_every=0")  # fmt: skip
    log = tmp_path / "train.log"
    (tmp_path / "tiny.yaml").write_text("task: chat\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # A shell that started the tests in the background ignores SIGINT, and a child inherits that (Python then
    # installs no KeyboardInterrupt handler): give the child the default, as a terminal's Ctrl-C would find it.
    proc = subprocess.Popen([sys.executable, "-m", "finetune.cli", "train", "tiny.yaml", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=log.open("w"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(read_metrics(out)) < 3 and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, log.read_text()[-2000:]
        assert not (out / "loss_curve.png").exists()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (out / "loss_curve.png").is_file()
    assert "interrupted" in log.read_text()


def test_progress_lines_and_bar():
    stream = io.StringIO()
    p = TrainProgress(total=10, done=4, stream=stream)
    p.update(5, 1.23456, 2e-4, 1234.5)
    p.note("step 5: val loss 1.0000")
    assert re.match(r"step 5/10 \(50%\) loss 1\.2346 lr 2\.00e-04 1234 tokens/s eta \d+s\n", stream.getvalue())
    assert stream.getvalue().endswith("step 5: val loss 1.0000\n")

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    bar = TrainProgress(total=10, done=0, stream=term)
    bar.update(3, 0.5, 1e-4, 99.0)
    bar.close()
    assert "train" in term.getvalue() and "3/10" in term.getvalue() and "loss=0.5000" in term.getvalue()
    silent = io.StringIO()
    TrainProgress(total=10, done=0, stream=silent, enabled=False).update(1, 0.5, 1e-4, 9.0)
    assert silent.getvalue() == ""


def test_duration():
    assert [duration(s) for s in (0, 42.4, 185, 3720)] == ["0s", "42s", "3m05s", "1h02m"]
