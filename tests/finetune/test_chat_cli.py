"""`finetune chat` and `finetune predict` on a run, an export and a merged model; a config's chat template."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from finetune.cli import EXIT_FAILED, EXIT_OK, main
from finetune.training.config import load_config
from finetune.training.train import train

from .conftest import PAIRS, tiny_overrides

SYSTEM = "你是诸葛亮。"


@pytest.fixture(scope="module")
def run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from .conftest import write_pairs

    root = tmp_path_factory.mktemp("chat")
    data = write_pairs(root / "pairs.jsonl", repeat=6)
    out = root / "run"
    extra = ("train.max_steps=60", f"data.system={SYSTEM}", "train.eval_every=0", "train.save_every=0",
             "train.max_seq_len=160")  # fmt: skip
    train(load_config(None, tiny_overrides(tiny_model, data, out, *extra)))
    return out


def test_predict_answers_a_file_of_prompts_from_a_run(run: Path, tmp_path: Path, capsys):
    src = tmp_path / "prompts.jsonl"
    records = [{"prompt": PAIRS[0][0]}, {"messages": [{"role": "user", "content": PAIRS[1][0]},
               {"role": "assistant", "content": "(reference)"}]}, {"instruction": PAIRS[2][0], "input": ""}]
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    out = tmp_path / "answers.jsonl"
    assert main(["predict", str(run), "--input", str(src), "--out", str(out), "--max-new-tokens", "64"]) == EXIT_OK
    assert "answered 3 prompts" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["prompt"] for r in rows[:1]] == [PAIRS[0][0]] and rows[1]["messages"][1]["content"] == "(reference)"
    # the run memorised its pairs (with its system prompt, which predict sends as training did)
    assert [r["answer"] for r in rows] == [a for _, a in PAIRS[:3]]


def test_chat_keeps_the_conversation_and_resets(run: Path, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{PAIRS[0][0]}\n\n/reset\n{PAIRS[1][0]}\n/exit\n{PAIRS[2][0]}\n"))
    assert main(["chat", str(run), "--max-new-tokens", "64"]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines == [PAIRS[0][1], "(conversation cleared)", PAIRS[1][1]]  # nothing after /exit


def test_chat_with_an_export_and_a_merged_model(run: Path, tmp_path: Path, monkeypatch, capsys):
    exported, merged = tmp_path / "export", tmp_path / "merged"
    assert main(["export", str(run), "--out", str(exported), "--dtype", "float32"]) == EXIT_OK
    assert main(["merge", str(run), "--out", str(merged)]) == EXIT_OK
    capsys.readouterr()
    for folder in (exported, merged):
        monkeypatch.setattr("sys.stdin", io.StringIO(PAIRS[3][0] + "\n"))
        assert main(["chat", str(folder), "--max-new-tokens", "64"]) == EXIT_OK
        assert capsys.readouterr().out.strip() == PAIRS[3][1], folder.name


def test_bad_folders_and_prompt_files_are_named(run: Path, tmp_path: Path, capsys):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy2(run / "config.yaml", unfinished / "config.yaml")
    assert main(["chat", str(unfinished)]) == EXIT_FAILED
    assert "has not finished" in capsys.readouterr().err
    assert main(["chat", str(tmp_path / "nope")]) == EXIT_FAILED
    assert "no such folder" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "好"}\n{"answer": "x"}\n', encoding="utf-8")
    assert main(["predict", str(run), "--input", str(bad), "--out", str(tmp_path / "o.jsonl")]) == EXIT_FAILED
    assert "line 2: not a prompt" in capsys.readouterr().err


def test_a_config_chooses_the_chat_template_where_the_base_has_none(tiny_model: Path, chat_file: Path,
                                                                      tmp_path: Path):  # fmt: skip
    from finetune.models.base import load_tokenizer
    from finetune.models.template import GEMMA_CHAT_TEMPLATE

    bare = tmp_path / "bare"
    shutil.copytree(tiny_model, bare)
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    tc = json.loads((bare / "tokenizer_config.json").read_text(encoding="utf-8"))
    tc.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(tc), encoding="utf-8")
    assert load_tokenizer(bare, template="gemma").chat_template == GEMMA_CHAT_TEMPLATE
    assert load_tokenizer(tiny_model, template="gemma").chat_template != GEMMA_CHAT_TEMPLATE  # its own is kept
    out = tmp_path / "run"
    train(load_config(None, tiny_overrides(bare, chat_file, out, "train.max_steps=2", "chat_template=gemma")))
    assert "<start_of_turn>" in load_tokenizer(out).apply_chat_template([{"role": "user", "content": "好"}],
                                                                        tokenize=False)  # fmt: skip
    with pytest.raises(ValueError, match="none of chatml, gemma"):
        load_tokenizer(bare, template="llama9")
