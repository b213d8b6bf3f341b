"""`kongming eval answers`: the figures (keyword rate, declines, false declines, length, latency) are right for a known
set, on the extractive path and through an upstream model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ingest.evaluation import question_half
from service.answer.answer_eval import AnswerRecord, holds_keyword, is_decline, report, summarize
from service.answer.extractive import NO_ANSWER, NO_ANSWER_EN


def record(i: int, answerable: bool, answer: str, keyword: bool, latency: float) -> AnswerRecord:
    return AnswerRecord(id=f"q{i}", half=question_half(f"q{i}"), question="?", answerable=answerable, answer=answer,
                        path="extractive", declined=is_decline(answer), keyword=keyword, chars=len(answer),
                        citations=0 if is_decline(answer) else 1, latency_ms=latency)


def test_summary_figures_for_a_known_set() -> None:
    records = [
        record(1, True, "二十只。借船二十只[1]", True, 10.0),  # 12 chars
        record(2, True, "在桃园。[1]", True, 20.0),  # 7 chars
        record(3, True, NO_ANSWER, False, 30.0),  # a false decline
        record(4, True, "曹操。[1]", False, 40.0),  # 6 chars, wrong
        record(5, False, NO_ANSWER_EN, False, 50.0),  # rightly declined
        record(6, False, "某人。[1]", False, 1000.0),  # 6 chars, answered what the book does not say
    ]
    s = summarize(records)
    assert (s["questions"], s["answerable"], s["unanswerable"]) == (6, 4, 2)
    assert s["keyword_rate"] == 0.5 and s["declined"] == 0.5 and s["false_declines"] == 0.25
    assert s["mean_chars"] == round((12 + 7 + 6 + 6) / 4, 1) and s["max_chars"] == 12
    assert s["latency_ms_p50"] == 35.0 and s["latency_ms_p95"] == 1000.0
    r = report(records)
    assert r["path"] == "extractive" and r["all"] == s
    halves = {h: [x for x in records if x.half == h] for h in ("tuning", "held-out")}
    for half, part in halves.items():
        if part:
            assert r[half] == summarize(part) and r[half]["questions"] == len(part)
    assert sum(r[h]["questions"] for h in halves if h in r) == 6


def test_an_empty_part_has_no_rates() -> None:
    s = summarize([record(1, False, NO_ANSWER, False, 5.0)])
    assert s["keyword_rate"] is None and s["false_declines"] is None and s["declined"] == 1.0
    assert s["mean_chars"] is None


def test_keywords_compare_numerals_as_numbers_and_declines_in_either_language() -> None:
    assert holds_keyword("只须三日便可交付", ["3日"]) and holds_keyword("约有100000支", ["十万"])
    assert not holds_keyword("二十只", ["三十"])
    # a citation marker is no numeral
    assert not holds_keyword("孔明借船。[3]", ["三"]) and holds_keyword("借船[2]三只", ["三只"])
    assert is_decline(NO_ANSWER) and is_decline(NO_ANSWER_EN) and is_decline("资料中没有相关内容。")
    assert not is_decline("二十只。[1]")


QUESTIONS = [
    {"id": "a1", "question": "孔明向鲁肃借了多少只船？", "chapter": 3, "answer_keywords": ["二十"], "answerable": True},
    {"id": "a2", "question": "刘备、关羽、张飞在哪里结为兄弟？", "chapter": 1, "answer_keywords": ["桃园"],
     "answerable": True},
    {"id": "a3", "question": "周瑜要孔明几日内造十万支箭？", "chapter": 3, "answer_keywords": ["十日"],
     "answerable": True},
    {"id": "u1", "question": "What is the capital of France?", "answerable": False},
    {"id": "u2", "question": "诸葛亮的儿子叫什么名字？", "answerable": False},
]


def run_eval(kb_settings: Any, tmp_path: Path, capsys: Any, *extra: str) -> tuple[dict[str, Any], list[dict]]:
    from service.cli import main

    qfile = tmp_path / "q.jsonl"
    qfile.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in QUESTIONS), encoding="utf-8")
    out = tmp_path / "answers.jsonl"
    args = ["eval", "answers", "--questions", str(qfile), "--json", str(out), "--data-dir", str(kb_settings.data_dir),
            "--collection", kb_settings.collection, *extra]
    capsys.readouterr()
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    return printed, rows


@pytest.mark.integration
def test_eval_answers_cli_prints_the_figures_of_its_records(kb_settings, tmp_path, capsys) -> None:
    printed, rows = run_eval(kb_settings, tmp_path, capsys)
    assert [r["id"] for r in rows] == [q["id"] for q in QUESTIONS]
    for r, q in zip(rows, QUESTIONS, strict=True):
        assert r["half"] == question_half(q["id"]) and r["path"] == "extractive"
        assert r["answerable"] == q["answerable"] and r["chars"] == len(r["answer"])
        assert r["declined"] == is_decline(r["answer"])
        assert r["keyword"] == (q["answerable"] and holds_keyword(r["answer"], q.get("answer_keywords", [])))
    # the printed summary is exactly the summary of the written records
    assert printed == report([AnswerRecord(**r) for r in rows])
    assert printed["path"] == "extractive" and printed["all"]["questions"] == 5
    assert (printed["all"]["answerable"], printed["all"]["unanswerable"]) == (3, 2)
    by_id = {r["id"]: r for r in rows}
    assert by_id["a1"]["keyword"] and by_id["a1"]["citations"] >= 1  # 二十只, cited
    assert by_id["u1"]["answer"] == NO_ANSWER_EN  # nothing in the book about France, declined in English


@pytest.mark.integration
def test_eval_answers_through_an_upstream_model(kb_settings, tmp_path, capsys, fake_upstream) -> None:
    printed, rows = run_eval(kb_settings, tmp_path, capsys, "--upstream-url", fake_upstream.base_url,
                             "--rag-model", "echo")
    answered = [r for r in rows if r["path"] == "generative"]
    assert answered and printed["path"] in ("generative", "extractive+generative")
    assert all(r["answer"].startswith("回声：") for r in answered)  # the upstream's reply is what was scored
    assert printed == report([AnswerRecord(**r) for r in rows])
