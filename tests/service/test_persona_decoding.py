"""Persona decoding: the persona's repetition controls and stop strings reach the in-process model and the upstream
request body; a `both` turn answers with the grounded extractive answer and its citations after the persona's
opening line."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from service.answer.extractive import NO_ANSWER
from service.answer.persona import persona_params
from service.engines import LocalEngine, OpenAICompatibleEngine, SamplingParams
from service.settings import ZHUGE_LIANG
from tests.service.fakes import QueuedEngine

from .conftest import FakeUpstream

HELLO = [{"role": "system", "content": "你是诸葛亮。"}, {"role": "user", "content": "先生安好？"}]


def test_persona_defaults_fill_what_the_request_left_unset():
    params = persona_params(ZHUGE_LIANG, SamplingParams(stop=["。"]))
    assert (params.frequency_penalty, params.no_repeat_ngram_size, params.repetition_penalty) == (0.5, 4, None)
    assert params.stop == ["\n", "。"]  # the persona's paragraph end first, the request's own kept
    asked = persona_params(ZHUGE_LIANG, SamplingParams(frequency_penalty=0.0, no_repeat_ngram_size=0))
    assert (asked.frequency_penalty, asked.no_repeat_ngram_size) == (0.0, 0)  # the request's choice stands
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert persona_params(ZHUGE_LIANG, SamplingParams(tools=tools)).stop == []  # a tool call spans lines
    off = ZHUGE_LIANG.model_copy(update={"no_repeat_ngram_size": 0, "frequency_penalty": None, "stop": []})
    bare = persona_params(off, SamplingParams())
    assert (bare.frequency_penalty, bare.no_repeat_ngram_size, bare.stop) == (None, None, [])


def test_output_penalty_counts_the_answer_tokens_only():
    import torch

    from service.engines.penalties import OutputPenalty

    ids = torch.tensor([[3, 3, 1, 1, 1, 2]])  # prompt 3 3 | answer 1 1 1 2
    scores = OutputPenalty(2, frequency=0.5, presence=1.0)(ids, torch.zeros(1, 5))
    assert scores.tolist() == [[0.0, -2.5, -1.5, 0.0, 0.0]]  # token 3 (the prompt's) untouched
    assert OutputPenalty(6, frequency=0.5)(ids, torch.ones(1, 5)).tolist() == [[1.0] * 5]  # nothing said yet


@pytest.mark.anyio
async def test_repetition_controls_reach_the_in_process_model(tiny_chat_model: Path):
    """The engine's answer is transformers' own greedy answer with the same repetition controls, and they change
    what the tiny random model says."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune.models.template import encode_chat
    from service.engines.penalties import OutputPenalty

    engine = LocalEngine(tiny_chat_model, name="tiny")
    plain = SamplingParams(max_tokens=40, temperature=0.0)
    controlled = SamplingParams(max_tokens=40, temperature=0.0, repetition_penalty=1.5, no_repeat_ngram_size=2)
    said = (await engine.generate(HELLO, plain)).text
    out = await engine.generate(HELLO, controlled)

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model).eval()
    ids = torch.tensor([encode_chat(tokenizer, HELLO)])
    with torch.inference_mode():
        gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=40, do_sample=False,
                             repetition_penalty=1.5, no_repeat_ngram_size=2, pad_token_id=tokenizer.pad_token_id)
    tokens = gen[0, ids.shape[1]:].tolist()
    assert out.text == tokenizer.decode(tokens, skip_special_tokens=True)
    assert out.text != said
    pairs = list(itertools.pairwise(tokens))
    assert len(pairs) == len(set(pairs))  # no two tokens said twice in a row
    # a presence penalty far below any score difference (a bonus): the answer says its first token over and over
    once = await engine.generate(HELLO, SamplingParams(max_tokens=12, temperature=0.0, presence_penalty=-100.0))
    with torch.inference_mode():
        gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                             logits_processor=[OutputPenalty(ids.shape[1], presence=-100.0)],
                             pad_token_id=tokenizer.pad_token_id)
    tokens = gen[0, ids.shape[1]:].tolist()
    assert tokens == tokens[:1] * 12 and once.text == tokenizer.decode(tokens, skip_special_tokens=True)
    await engine.aclose()


@pytest.mark.anyio
async def test_repetition_penalty_reaches_the_upstream_request(fake_upstream: FakeUpstream):
    engine = OpenAICompatibleEngine(fake_upstream.base_url, "echo")
    try:
        await engine.generate(HELLO, persona_params(ZHUGE_LIANG, SamplingParams(max_tokens=50)))
        await engine.generate(HELLO, SamplingParams(max_tokens=50, repetition_penalty=1.1, presence_penalty=0.2))
        await engine.generate(HELLO, SamplingParams(max_tokens=50))
    finally:
        await engine.aclose()
    persona, asked, plain = fake_upstream.state.requests
    assert persona["frequency_penalty"] == 0.5 and persona["stop"] == ["\n"]
    assert "no_repeat_ngram_size" not in persona and "repetition_penalty" not in persona  # vLLM has no n-gram ban
    assert (asked["repetition_penalty"], asked["presence_penalty"]) == (1.1, 0.2)  # vLLM's own names
    assert not {"repetition_penalty", "frequency_penalty", "presence_penalty", "stop"} & plain.keys()


def chat(client, content, **extra):
    body = {"model": "kongming", "messages": [{"role": "user", "content": content}], **extra}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.integration
def test_both_answers_with_the_grounded_extract_after_the_persona_opening(make_client):
    engine = QueuedEngine("zhuge", ["上帝宽恕人！" * 30])
    client = make_client(engines={"zhuge-liang": engine})
    rag = chat(client, "孔明向鲁肃借了多少只船？", kongming={"route": "rag"})
    body = chat(client, "孔明向鲁肃借了多少只船？", kongming={"route": "both"})
    answer = body["choices"][0]["message"]["content"]
    assert body["kongming"]["route"]["route"] == "both" and body["kongming"]["route"]["persona"] == "zhuge-liang"
    assert answer.startswith(ZHUGE_LIANG.opening)
    cited = body["kongming"]["citations"]
    assert cited and all(f"[{c['index']}]" in answer for c in cited)
    assert "二十" in answer and "上帝" not in answer and not engine.calls  # the facts, not the 270M model's ramble
    assert answer.removeprefix(ZHUGE_LIANG.opening) == rag["choices"][0]["message"]["content"]
    streamed = client.post("/v1/chat/completions", json={
        "model": "kongming", "stream": True, "kongming": {"route": "both"},
        "messages": [{"role": "user", "content": "孔明向鲁肃借了多少只船？"}]}).text
    events = [json.loads(b[6:]) for b in streamed.split("\n\n") if b.startswith("data: {")]
    assert "".join(c["delta"].get("content") or "" for e in events for c in e["choices"]) == answer
    # an English question gets the facts without the persona's Chinese opening line
    english = chat(client, "How many boats did Kongming borrow from Lu Su?", kongming={"route": "both"})
    text = english["choices"][0]["message"]["content"]
    assert english["kongming"]["citations"] and not text.startswith(ZHUGE_LIANG.opening), text


@pytest.mark.integration
def test_a_both_turn_the_book_does_not_answer_is_declined_not_invented(make_client):
    engine = QueuedEngine("zhuge", ["吾率二十万兵以堵路而逃荆州。"])
    client = make_client(engines={"zhuge-liang": engine})
    body = chat(client, "丞相，牛顿第二定律的公式是什么？", kongming={"route": "both"})
    answer = body["choices"][0]["message"]["content"]
    assert answer == NO_ANSWER and not body["kongming"]["citations"] and not engine.calls
