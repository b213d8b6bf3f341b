"""Onboarding output of `ingest`: progress lines where a bar cannot show (a log, a pipe), and jieba's start-up
chatter neither twice nor at DEBUG."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

from ingest.writer import ProgressLines, progress_display

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^embedding: (\d+)/(\d+) chunks \((\d+)%\), [\d.]+ chunks/s, (about \d+ s left|done in [\d.]+ s)$")


def test_progress_lines_say_done_total_rate_and_time_left():
    out = io.StringIO()
    bar = ProgressLines(100, out, every=0)
    for _ in range(4):
        bar.update(25)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and all(LINE.match(line) for line in lines), lines
    assert lines[0].startswith("embedding: 25/100 chunks (25%)") and "left" in lines[0]
    assert lines[-1].startswith("embedding: 100/100 chunks (100%)") and "done in" in lines[-1]


def test_chunks_counted_without_embedding_do_not_speed_up_the_rate_or_shorten_the_time_left():
    out = io.StringIO()
    bar = ProgressLines(1000, out, every=0)
    bar.skip(500)  # vectors the store had: done at once
    bar.started -= 10.0  # then 10 s for 100 embedded chunks
    bar.update(100)
    last = out.getvalue().splitlines()[-1]
    rate, left = re.match(r"embedding: 600/1000 chunks \(60%\), ([\d.]+) chunks/s, about (\d+) s left$", last).groups()
    assert 9.0 <= float(rate) <= 10.0 and 40 <= int(left) <= 44, last  # not 50 chunks/s and 8 s left


def test_progress_lines_are_spaced_in_time_but_keep_the_first_and_the_last():
    out = io.StringIO()
    bar = ProgressLines(1000, out, every=3600)
    for _ in range(100):
        bar.update(10)
    lines = out.getvalue().splitlines()
    assert [line.split(" chunks")[0] for line in lines] == ["embedding: 10/1000", "embedding: 1000/1000"]


def test_a_pipe_gets_lines_and_a_terminal_gets_a_bar():
    assert isinstance(progress_display(10, io.StringIO()), ProgressLines)

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert not isinstance(progress_display(10, Tty()), ProgressLines)


def test_ingest_add_into_a_pipe_prints_progress_and_jieba_says_nothing(tmp_path, novel_file):
    env = {**os.environ, "KONGMING_DATA_DIR": str(tmp_path / "data"), "KONGMING_CHUNK_SIZE": "80",
           "KONGMING_CHUNK_OVERLAP": "20", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "ingest.cli", "add", str(novel_file), "-v"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=600, check=False)  # stdout and stderr are pipes
    assert r.returncode == 0, r.stderr
    progress = [line for line in r.stderr.splitlines() if line.startswith("embedding:")]
    assert progress and all(LINE.match(line) for line in progress), r.stderr
    done, total = LINE.match(progress[-1]).groups()[:2]  # type: ignore[union-attr]
    assert done == total and int(total) > 5
    assert "\r" not in r.stderr, "no bar redraws in a pipe"
    assert "prefix dict" not in r.stderr and "DEBUG" not in r.stderr and "Loading model" not in r.stderr, r.stderr
    assert "1 documents (1 new" in r.stdout


def test_jieba_logs_through_the_application_once_and_only_warnings():
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.DEBUG, format='%(levelname)s %(name)s %(message)s')\n"
        "from ingest.quiet import load_jieba\n"
        "jieba = load_jieba()\n"
        "jieba.initialize()\n"
        "print(jieba.lcut('诸葛亮草船借箭'))\n"
        "logging.getLogger('jieba').warning('a real problem')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       check=True)
    assert "prefix dict" not in r.stderr and "Loading model" not in r.stderr, r.stderr
    assert r.stderr.count("a real problem") == 1 and "WARNING jieba a real problem" in r.stderr, r.stderr
    assert "诸葛亮" in r.stdout
