"""Evaluation: BLEU/ROUGE-L/style on known strings, classification metrics and baselines, plots, whole runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.evaluation.classify import LabelledText, baselines, metrics, split_rows
from finetune.evaluation.plots import overfitting_note, plot_loss_curve
from finetune.evaluation.textmetrics import bleu, rouge_l, style_score
from finetune.training.config import load_config
from finetune.training.runio import append_metric

from .conftest import tiny_overrides

STYLE = {"particles": list("之乎者也矣焉哉"), "self_address": ["亮", "吾", "某"], "address": ["主公", "将军", "陛下"]}


def test_bleu_on_known_strings():
    ref = "亮于三日前已算定今日有大雾"
    assert bleu([ref], [ref]) == pytest.approx(100.0)
    assert bleu(["曹操"], [ref]) == pytest.approx(0.0)
    # sacrebleu's zh tokenizer splits CJK into characters: 5 of 13 characters, all n-grams matching, short output
    assert bleu(["今日有大雾"], [ref]) == pytest.approx(20.19, abs=0.01)


def test_character_rouge_l_on_known_strings():
    assert rouge_l(["亮于三日前已算定"], ["亮于三日前已算定"]) == pytest.approx(1.0)
    # LCS 三日前大雾 = 5: precision 5/5, recall 5/13, F1 = 2*5/(5+13)
    assert rouge_l(["三日前大雾"], ["亮于三日前已算定今日有大雾"]) == pytest.approx(10 / 18)
    assert rouge_l(["主公勿忧", "曹操"], ["主公勿忧", "孙权"]) == pytest.approx(0.5)


def test_style_score_counts_the_persona_register():
    s = style_score(["亮以为不可也", "主公勿忧", "今天天气好", "吾观之，将军可破也"], STYLE)
    assert s["particles"]["share"] == pytest.approx(0.5)  # 也 / 之…也
    assert s["self_address"]["share"] == pytest.approx(0.5)  # 亮 / 吾
    assert s["address"]["share"] == pytest.approx(0.5)  # 主公 / 将军
    assert s["score"] == pytest.approx(0.5)
    assert style_score([], STYLE)["score"] == 0


def test_classification_metrics_on_known_labels():
    m = metrics([0, 0, 1, 1, 1], [0, 1, 1, 1, 0], ["差评", "好评"])
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["per_class"]["好评"] == {"precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3),
                                     "f1": pytest.approx(2 / 3), "support": 3}  # fmt: skip
    assert m["per_class"]["差评"]["precision"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["confusion_matrix"]["matrix"] == [[1, 1], [1, 2]]


def test_baselines_and_seeded_split():
    good = ["很快，好吃，味道足", "送餐快，态度好", "好吃，量大，下次还点", "味道不错，很满意"]
    bad = ["太慢了，菜都凉了", "难吃，再也不点了", "送了两个小时，差评", "量少，很难吃"]
    rows = [LabelledText(t, 1) for t in good * 5] + [LabelledText(t, 0) for t in bad * 10]
    train, test = split_rows(rows, 0.3, 100)
    assert (len(train), len(test)) == (42, 18) and split_rows(rows, 0.3, 100) == (train, test)
    result = baselines(train, test, ["差评", "好评"])
    assert result["majority"]["per_class"]["好评"]["recall"] == 0  # always says 差评, the larger class
    assert result["tfidf_logreg"]["accuracy"] == pytest.approx(1.0)


def test_loss_curve_png_and_overfitting_note(tmp_path: Path):
    for step in range(1, 41):
        append_metric(tmp_path, {"step": step, "loss": 3.0 - step * 0.05})
        if step % 10 == 0:
            append_metric(tmp_path, {"step": step, "val_loss": [2.5, 2.2, 2.4, 2.8][step // 10 - 1]})
    png = plot_loss_curve(tmp_path)
    assert png == tmp_path / "loss_curve.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    note = overfitting_note([json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()])
    assert note is not None and "rose from 2.2000 (step 20) to 2.8000 (step 40)" in note
    healthy = [{"step": s, "loss": 3 - s * 0.05} for s in range(1, 41)] + [
        {"step": s, "val_loss": 2.5 - s * 0.01} for s in (10, 20, 30, 40)
    ]
    assert overfitting_note(healthy) is None
    assert plot_loss_curve(tmp_path / "empty") is None


def test_evaluate_a_chat_run(tiny_model: Path, chat_file: Path, tmp_path: Path):
    from finetune.evaluation.evaluate import evaluate_run
    from finetune.training.train import train

    run = tmp_path / "run"
    train(load_config(None, tiny_overrides(tiny_model, chat_file, run, "train.max_steps=30")))
    report = evaluate_run(run)
    assert report["val"]["tuned"]["loss"] < report["val"]["base"]["loss"]
    assert report["val"]["tuned"]["perplexity"] == pytest.approx(
        2.718281828 ** report["val"]["tuned"]["loss"], rel=1e-3
    )
    gen = report["generation"]
    assert gen["held_out"] == 4 and {"tuned", "base", "reference"} <= gen.keys()
    assert gen["tuned"]["rouge_l"] > gen["base"]["rouge_l"]  # the memorised answers come back
    assert gen["reference"]["rouge_l"] == pytest.approx(1.0)
    rows = [json.loads(x) for x in (run / "eval_samples.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 4 and {"prompt", "reference", "tuned", "base"} <= rows[0].keys()
    assert json.loads((run / "eval.json").read_text(encoding="utf-8"))["val"] == report["val"]
    assert (run / "loss_curve.png").is_file()


def test_evaluate_a_classification_run(tiny_model: Path, tmp_path: Path):
    from finetune.evaluation.evaluate import evaluate_run
    from finetune.training.train import train

    csv = tmp_path / "reviews.csv"
    lines = ["label,review"] + [f"1,好吃，送餐快{i}" for i in range(20)] + [f"0,太慢了，菜都凉了{i}" for i in range(30)]
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run = tmp_path / "run"
    overrides = tiny_overrides(tiny_model, csv, run, "task=classify", "data.val_split=0.3", "data.split_seed=100",
                               "train.max_steps=20", "eval.max_samples=0", "train.max_seq_len=160")  # fmt: skip
    train(load_config(None, overrides))
    c = evaluate_run(run)["classification"]
    assert (c["train_rows"], c["test_rows"]) == (35, 15)
    for name in ("tuned", "base", "majority", "tfidf_logreg"):
        assert 0 <= c[name]["accuracy"] <= 1 and c[name]["confusion_matrix"]["labels"] == ["差评", "好评"]
        assert sum(map(sum, c[name]["confusion_matrix"]["matrix"])) == 15
    assert c["tuned"]["accuracy"] == pytest.approx(1.0)  # two easy patterns, memorised


def test_eval_refuses_an_unfinished_run(tmp_path: Path):
    from finetune.evaluation.evaluate import EvalError, evaluate_run

    with pytest.raises(EvalError, match=r"no config\.yaml in"):
        evaluate_run(tmp_path)


def test_style_counts_the_answer_own_words_not_an_echo_of_the_prompt():
    from finetune.evaluation.textmetrics import generation_metrics, own_words

    system = "你是诸葛亮，字孔明，号卧龙，蜀汉丞相。"
    assert own_words("你是诸葛亮，字孔明。吾观之", [system, "问"]) == "。吾观之"
    assert own_words("亮以为不可也", [system]) == "亮以为不可也"  # single shared characters are not copying
    echo, speech = system + "请回答。", "亮以为不可也"
    m = generation_metrics([echo, speech], ["亮以为不可也", "亮以为不可也"], STYLE, [[system, "问"], [system, "问"]])
    assert m["style_raw"]["self_address"]["share"] == 1.0  # the echo's 亮 counted...
    assert m["style"]["self_address"]["share"] == 0.5  # ...but it is not the model speaking
    assert 0.5 < m["copied_share"] < 0.8
    assert "style_raw" not in generation_metrics([speech], [speech], STYLE)


def test_loop_rate_counts_answers_that_repeat_a_string_three_times():
    from finetune.evaluation.textmetrics import generation_metrics, loop_rate, repeated

    assert repeated("以争刘璋为首，为王之当；" * 6) == "以争刘璋"
    assert repeated("上帝宽恕人！" * 30) == "上帝宽恕"
    assert repeated("亮以为不可也，亮以为不可也。") is None  # twice is not a loop
    assert repeated("曹操乃汉贼也，又何必问？") is None
    assert repeated("哈哈哈哈哈哈哈哈") is None  # "哈哈哈哈" twice without overlap
    assert repeated("哈" * 12) == "哈哈哈哈"
    assert repeated("……！！" * 4) is None  # punctuation alone is no loop
    assert repeated("借船二十只。[1]每船三十人。[1]束草千余个。[2]") is None  # citation markers are no loop
    assert repeated("in the name of God, in the name of God, in the name of God") == "in the name of"  # words
    assert repeated("主公 勿忧 主公 勿忧 主公 勿忧") == "主公勿忧"  # spaces skipped
    assert repeated("ab " * 11) is None and repeated("ab " * 12) == "ab ab ab ab"
    assert loop_rate(["吾已成，" * 3, "亮以为不可也", "主公勿忧", "将军可破也"]) == pytest.approx(0.25)
    assert loop_rate([]) == 0.0
    m = generation_metrics(["吾已成，" * 3, "亮以为不可也"], ["亮以为不可也"] * 2, STYLE)
    assert m["loop_rate"] == pytest.approx(0.5)
