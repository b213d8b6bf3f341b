"""Messages the book cannot answer: a factual question outside the knowledge base goes to the rag route and is declined
in the user's language; a short message is a follow-up only when the conversation has a subject."""

from __future__ import annotations

import pytest

from service.answer.extractive import NO_ANSWER, NO_ANSWER_EN
from service.answer.router import Signals, conversation_features, text_features

ENTITIES = frozenset({"刘备", "关羽", "赤壁", "曹操"})


def signals() -> Signals:
    return Signals(entities=lambda: ENTITIES,
                   keyword_top=lambda q: (float(sum(len(e) for e in ENTITIES if e in q)), max(len(q), 1)),
                   persona_names=["诸葛亮", "孔明", "丞相", "先生"])


def turns(*texts: str) -> list[dict[str, str]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)]


@pytest.mark.parametrize(("history", "followup"), [
    (("赤壁之战曹操有多少人马？", "号称八十三万。"), 1.0),  # a subject: a factual question naming the book's people
    (("你好", "足下安好。"), 0.0),  # a greeting is no subject
    (("Hello!", "Greetings."), 0.0),
    ((), 0.0),  # no conversation
])
def test_a_short_message_is_a_follow_up_only_when_the_conversation_has_a_subject(history, followup) -> None:
    _, f, _ = conversation_features(turns(*history, "What is the capital of France?"), signals())
    assert f["short_followup"] == followup


def test_how_tall_how_far_are_factual_questions() -> None:
    for q in ("珠穆朗玛峰有多高？", "地球到太阳有多远？", "长江有多长"):
        _, f, _ = conversation_features(turns(q), signals())
        assert f["fact_question"] >= 1, q


@pytest.mark.parametrize(("message", "third"), [
    ("诸葛亮平时爱穿什么鞋？", 1.0),  # about him: rag (eval/ROUTES.md rule 1)
    ("孔明为什么要斩马谡", 1.0),
    ("孔明，汝何以斩马谡？", 0.0),  # his name opens the message and calls him
    ("诸葛亮，你平时爱穿什么鞋？", 0.0),
    ("丞相平时爱穿什么鞋？", 0.0),  # a form of address
    ("曹操爱穿什么鞋？", 0.0),  # not the persona
])
def test_naming_the_persona_without_speaking_to_him_is_the_third_person(message, third) -> None:
    f, _ = text_features(message, signals())
    assert f["third_person"] == third


@pytest.mark.integration
@pytest.mark.parametrize(("history", "message", "decline"), [
    ((), "What is the capital of France?", NO_ANSWER_EN),
    (("你好", "足下安好，有何见教？"), "What is the capital of France?", NO_ANSWER_EN),
    ((), "法国的首都是哪里？", NO_ANSWER),
])
def test_a_question_outside_the_book_is_routed_to_rag_and_declined_in_its_language(
    make_client, history, message, decline
) -> None:
    client = make_client()
    r = client.post("/v1/chat/completions", json={"model": "kongming", "messages": turns(*history, message)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["kongming"]["route"]["route"] == "rag", body["kongming"]["route"]
    assert body["choices"][0]["message"]["content"] == decline
    assert body["kongming"]["citations"] == []
