"""The router: signals from text and the knowledge base, fitted weights, decisions with reasons, the CLI."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from service.answer.router import ROUTES, Router, Signals, conversation_features, text_features
from service.answer.router_fit import LabelledMessage, evaluate_router, fit_router, load_messages

REPO = Path(__file__).resolve().parents[2]
ENTITIES = frozenset({"刘备", "关羽", "赤壁", "周瑜", "荆州", "草船借箭"})


def signals() -> Signals:
    return Signals(
        entities=lambda: ENTITIES,
        keyword_top=lambda q: (float(sum(len(e) for e in ENTITIES if e in q)), max(len(q), 1)),
        persona_names=["诸葛亮", "孔明", "丞相", "先生", "亮"],
    )


def fake_embed(texts: list[str]) -> np.ndarray:
    """Deterministic bag-of-characters vectors: similar messages get similar vectors. (crc32, not hash(): str
    hashes change with each process's PYTHONHASHSEED, which made the fitted router's reasons flaky.)"""
    out = np.zeros((len(texts), 64), dtype=np.float32)
    for i, t in enumerate(texts):
        for ch in t:
            out[i, zlib.crc32(ch.encode("utf-8")) % 64] += 1
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


TRAIN = [
    ("赤壁之战周瑜用了什么计", "rag"), ("关羽在荆州做了什么", "rag"), ("刘备是怎么死的", "rag"),
    ("周瑜几岁去世", "rag"), ("荆州后来归了谁", "rag"), ("关羽的兵器叫什么", "rag"),
    ("先生近来可好", "persona"), ("丞相，你好", "persona"), ("先生，我心里很烦", "persona"),
    ("你喜欢弹琴吗", "persona"), ("丞相早上好", "persona"), ("先生给我一些读书的建议", "persona"),
    ("丞相，当年赤壁您是怎么借东风的", "both"), ("先生，你觉得关羽守荆州对吗", "both"),
    ("孔明，你当时草船借箭怕不怕", "both"), ("丞相，您怎么看周瑜", "both"),
]


def items(pairs):
    return [LabelledMessage(str(i), [{"role": "user", "content": m}], r) for i, (m, r) in enumerate(pairs)]


def test_text_features_read_address_entities_and_questions():
    f, names = text_features("丞相，当年赤壁之战您是怎么借东风的？", signals())
    assert f["persona_named"] == 1 and f["title"] == 1 and f["second_person"] == 1
    assert f["entities"] == 1 and names["entities"] == ["赤壁"] and f["past_self"] >= 1
    assert f["fact_question"] >= 1
    g, _ = text_features("Zhuge Liang, what do you think of Cao Cao?", signals())
    assert g["english"] == 1.0 and g["second_person"] >= 1 and g["opinion"] >= 1


def test_a_message_in_traditional_script_has_the_simplified_ones_features():
    for simple in ("丞相，当年赤壁之战您是怎么借东风的？", "刘备在荆州做了什么？", "先生，我心里很烦"):
        traditional = {"丞相，当年赤壁之战您是怎么借东风的？": "丞相，當年赤壁之戰您是怎麼借東風的？",
                       "刘备在荆州做了什么？": "劉備在荊州做了什麼？", "先生，我心里很烦": "先生，我心裡很煩"}[simple]
        assert text_features(traditional, signals()) == text_features(simple, signals())
    # a knowledge base of traditional-script documents knows its names in that script
    kept = Signals(entities=lambda: frozenset({"劉備", "荊州"}), keyword_top=lambda q: (0.0, 1),
                   persona_names=["诸葛亮"])
    f, names = text_features("刘备在荆州做了什么？", kept)
    assert f["entities"] == 2 and set(names["entities"]) == {"劉備", "荊州"}


def test_a_follow_up_carries_the_previous_turn():
    msgs = [{"role": "user", "content": "刘备是怎么死的"}, {"role": "assistant", "content": "..."},
            {"role": "user", "content": "那后来呢"}]
    _, f, _ = conversation_features(msgs, signals())
    assert f["has_history"] == 1 and f["short_followup"] == 1 and f["prev_entities"] == 1


def test_fitted_router_decides_and_explains():
    model = fit_router(items(TRAIN), signals(), fake_embed)
    assert len(model.coef) == 3 and len(model.coef[0]) == len(model.features)
    router = Router(model, signals(), fake_embed)
    for message, route in [("关羽在赤壁做了什么", "rag"), ("先生，你好", "persona"),
                           ("丞相，当年荆州您是怎么丢的", "both")]:
        d = router.decide([{"role": "user", "content": message}])
        assert d.route == route, (message, d)
        assert set(d.scores) == set(ROUTES) and abs(sum(d.scores.values()) - 1) < 1e-3
        assert d.scores[route] == max(d.scores.values())
        assert d.reason.startswith(f"{route}: ")
    d = router.decide([{"role": "user", "content": "关羽在赤壁做了什么"}])
    assert "knowledge base" in d.reason  # the signal that separates it from chat: its words are the novel's
    assert d.features["entities"] == 2 and d.features["persona_named"] == 0


def test_a_message_asking_to_go_on_takes_the_route_of_the_message_before():
    router = Router(fit_router(items(TRAIN), signals(), fake_embed), signals(), fake_embed)

    def turns(*users: str) -> list[dict[str, str]]:
        out = []
        for u in users:
            out += [{"role": "user", "content": u}, {"role": "assistant", "content": "……"}]
        return out[:-1]

    for first, route in [("关羽在赤壁做了什么", "rag"), ("丞相，当年荆州您是怎么丢的", "both")]:
        assert router.decide(turns(first)).route == route
        for go_on in ("那后来呢？", "然后呢", "接着讲"):
            d = router.decide(turns(first, go_on))
            assert (d.route, d.reason) == (route, f"{route}: asks the conversation to go on (the route of the "
                                                  "message before)"), (first, go_on)
        assert router.decide(turns(first, "他是怎么死的？", "那后来呢？")).route == router.decide(
            turns(first, "他是怎么死的？")).route  # two follow-ups: the one before decides
        assert router.decide(turns(first, "接着讲", "然后呢", "再后来呢")).route == route  # a chain of them
    # a short message with its own signal is decided by the model, not carried over (thanks, a greeting, "you")
    assert router.decide(turns("关羽在赤壁做了什么", "先生，你好")).route == "persona"


def test_fit_leaves_each_message_out_of_its_own_similarity():
    """With the message itself among the examples, similarity would be 1.0 for its own route: leaked."""
    model = fit_router(items(TRAIN), signals(), fake_embed)
    router = Router(model, signals(), fake_embed)
    report, _ = evaluate_router(router, items(TRAIN))
    assert report.accuracy > 0.8
    assert model.meta["n"] == len(TRAIN)


def test_evaluation_counts_confusion_and_per_route_scores():
    model = fit_router(items(TRAIN), signals(), fake_embed)
    router = Router(model, signals(), fake_embed)
    test = items([("刘备是怎么死的", "rag"), ("先生近来可好", "persona"), ("你好", "both")])
    report, records = evaluate_router(router, test)
    assert [r["id"] for r in records] == ["0", "1", "2"]
    assert sum(sum(row.values()) for row in report.confusion.values()) == 3
    assert report.confusion["both"]["both"] == 0  # "你好" is no question about events
    assert report.per_route["both"]["recall"] == 0.0


def test_load_messages_reports_bad_lines_and_ignores_extra_fields(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"id": "a", "message": "hi", "route": "rag", "extra": 1}\n{"id": "b", "message": "x"}\n',
                 encoding="utf-8")
    got = load_messages(p)
    assert [(i.id, i.route) for i in got] == [("a", "rag"), ("b", None)]
    p.write_text('{"id": "a", "message": "hi", "route": "chat"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"m\.jsonl:1: route must be one of"):
        load_messages(p)
    p.write_text("not json\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"m\.jsonl:1"):
        load_messages(p)


def test_shipped_router_model_is_valid():
    from service.answer.router import DEFAULT_MODEL, RouterModel

    model = RouterModel.load(DEFAULT_MODEL)
    assert len(model.coef) == 3 and all(len(row) == len(model.features) for row in model.coef)
    assert len(model.examples) >= 200 and {e["route"] for e in model.examples} == set(ROUTES)


@pytest.mark.integration
def test_eval_route_cli_writes_one_line_per_message(kb_settings, tmp_path, capsys, monkeypatch):
    from service.cli import main

    data_dir = kb_settings.data_dir
    msgs = tmp_path / "m.jsonl"
    rows = [{"id": "r1", "message": "孔明向鲁肃借了多少只船？", "route": "rag", "note": "extra"},
            {"id": "p1", "message": "先生近来可好？", "route": "persona"},
            {"id": "b1", "message": "孔明先生，当年草船借箭时您怎么算准会有大雾的？", "route": "both"}]
    msgs.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    args = ["eval", "route", "--messages", str(msgs), "--json", str(out), "--data-dir", str(data_dir),
            "--collection", kb_settings.collection]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["accuracy"] == 1.0 and summary["confusion"]["rag"]["rag"] == 1
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [x["id"] for x in lines] == ["r1", "p1", "b1"]
    assert all(set(x) == {"id", "route", "scores", "reason"} for x in lines)
    # without labels: only the file
    msgs.write_text(json.dumps({"id": "x", "message": "你好"}) + "\n", encoding="utf-8")
    assert main(args) == 0
    assert capsys.readouterr().out == ""
    assert json.loads(out.read_text(encoding="utf-8"))["id"] == "x"


@pytest.mark.integration
def test_fit_router_cli_and_ask(kb_settings, tmp_path, capsys):
    from service.cli import main

    model = tmp_path / "router.json"
    common = ["--data-dir", str(kb_settings.data_dir), "--collection", kb_settings.collection]
    assert main(["fit", "router", "--messages", str(REPO / "eval" / "route_train.jsonl"), "--out", str(model),
                 *common]) == 0
    assert json.loads(model.read_text(encoding="utf-8"))["meta"]["n"] >= 260
    capsys.readouterr()
    assert main(["ask", "孔明向鲁肃借了多少只船？", "--route", "rag", *common]) == 0
    out = capsys.readouterr().out
    assert out.startswith("route: rag") and "二十只" in out and "[1]" in out and "第3回" in out


def test_route_scores_are_sklearns_precision_recall_and_confusion():
    from service.answer.router_fit import route_scores

    gold = ["rag", "rag", "persona", "both", "both", "both"]
    routed = ["rag", "both", "persona", "both", "rag", "both"]
    per_route, confusion = route_scores(gold, routed)
    assert confusion["rag"] == {"rag": 1, "persona": 0, "both": 1} and confusion["both"]["rag"] == 1
    assert per_route["rag"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert per_route["both"] == {"precision": 0.6667, "recall": 0.6667, "f1": 0.6667, "support": 3}
    assert per_route["persona"]["precision"] == 1.0
    empty, zeros = route_scores([], [])
    assert empty["rag"]["support"] == 0 and zeros["both"]["both"] == 0


def test_message_sets_split_on_newlines_only(tmp_path):
    """A message holding U+2028, U+2029 or U+0085 (valid JSON, what json.dumps(ensure_ascii=False) writes) stays one
    record, and the line numbers of later errors stay right."""
    import json

    records = [{"id": f"m{i}", "message": f"孔明{sep}借箭", "route": "rag"} for i, sep in
               enumerate(["\u2028", "\u2029", "\x85", "\x0b"])]
    path = tmp_path / "set.jsonl"
    path.write_text("\r\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    loaded = load_messages(path)
    assert [m.id for m in loaded] == ["m0", "m1", "m2", "m3"] and loaded[0].text == "孔明\u2028借箭"
    path.write_text(path.read_text(encoding="utf-8") + "not json\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"set.jsonl:5:"):
        load_messages(path)
