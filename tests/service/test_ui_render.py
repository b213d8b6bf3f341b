"""How the page writes an answer: citations renumbered to what the answer cites, the router's reasons in Chinese,
the loading note for an in-process persona model that is not loaded yet."""

from __future__ import annotations

import pytest

from service.protocol import Citation
from service.ui.render import REASONS_ZH, cited_sources, reason_zh


def cite(n: int) -> Citation:
    return Citation(index=n, doc_id="d", document="小三国", chapter=n, snippet=f"段落{n}", score=0.5, chunk_id=f"c{n}")


def test_citations_are_renumbered_in_order_of_use_and_uncited_ones_dropped():
    text, cited = cited_sources("借箭十万[4]。后来[2][4]，又[9]。", [cite(1), cite(2), cite(3), cite(4)], "rag")
    assert text == "借箭十万[1]。后来[2][1]，又[9]。"  # [9] names no passage: left as written
    assert [(c.index, c.chapter) for c in cited] == [(1, 4), (2, 2)]


@pytest.mark.parametrize(("route", "listed"), [("both", []), ("rag", [1, 2])])
def test_an_answer_citing_nothing(route, listed):
    """`both`: the persona spoke without the passages, none is listed; `rag` (a model writing no markers): all."""
    _, cited = cited_sources("亮以为然。", [cite(3), cite(5)], route)
    assert [c.index for c in cited] == listed


def test_every_router_phrase_reads_in_chinese():
    from service.answer.router import _EXPLAIN

    phrases = {p for pair in _EXPLAIN.values() for p in pair}
    assert phrases <= set(REASONS_ZH), sorted(phrases - set(REASONS_ZH))
    reason = ("both: names people/places of the knowledge base (刘备、关羽); previous message speaks to 'you'; "
              "is short")
    assert reason_zh(reason, "both") == "提到知识库里的人名地名（刘备、关羽）；上一条消息以“你”相称；消息较短"
    assert reason_zh("rag: forced by the request", "rag") == "由请求指定"


def test_a_persona_adapter_on_a_base_not_yet_loaded_says_it_loads(tiny_chat_model):
    """The personas' engines are adapters on a shared in-process base: the page's note looks at the base."""
    from service.answer.chat import Reply
    from service.answer.router import RouteDecision
    from service.engines import AdapterEngine, LocalEngine
    from service.ui.chat import LOADING, placeholder

    host = LocalEngine(tiny_chat_model, name="base")
    decision = RouteDecision("persona", {}, "persona: forced by the request", forced=True)
    reply = Reply(decision, [], "m", engine=AdapterEngine(host, "kongming-persona-x", None))
    assert placeholder(reply) == LOADING
    host.load()
    assert placeholder(reply) == "…"


def test_a_fine_tuned_models_answer_cut_by_the_limit_is_marked_on_the_page(make_client, tiny_chat_model, tmp_path):
    """The page's chat with a fine-tuned model (its engine's own stream, no persona cut) marks an answer that hit
    the token limit, as the API's finish_reason "length" says."""
    import asyncio

    from service.ui import make_respond
    from service.ui.chat import WRITING
    from service.ui.render import TRUNCATED
    from tests.service.test_models_api import FT, _add
    from tests.tinymodel import build_random_lora

    client = make_client(max_tokens_cap=6)
    _add(tmp_path / "svc", build_random_lora(tiny_chat_model, tmp_path / "lora"), str(tiny_chat_model))
    ask = {"model": FT, "messages": [{"role": "user", "content": "皇上驾到！"}]}
    api = client.post("/v1/chat/completions", json=ask)
    assert api.json()["choices"][0]["finish_reason"] == "length", api.text
    respond = make_respond(client.app.state.chat, client.app.state.keys)

    async def states() -> list[str]:
        return [h[-1]["content"] async for _, h, _ in respond("皇上驾到！", [], [], "auto", None, "", FT)]

    seen = asyncio.run(states())
    answer, _, route = seen[-1].partition("\n\n**route:")
    assert answer.rstrip().endswith(TRUNCATED) and "微调模型" in route, seen[-1]
    # until then the answer shows it is still being written (a newcomer's screenshot 60 s into a 512-token answer
    # showed neither mark nor route line: it was not finished)
    streamed = seen[1:-1]
    assert streamed and all(s.endswith(WRITING) and "route:" not in s for s in streamed), streamed
    assert WRITING not in seen[-1]


def test_a_knowledge_base_still_embedding_shows_its_files_not_zero():
    from service.ui.render import store_label

    def store(**counts):
        base = {"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 0}
        return {"id": "vs_sanguo", "name": "sanguo", "file_counts": {**base, **counts}}

    assert store_label(store(in_progress=1, total=1)) == "sanguo · 1 file, 1 embedding"  # searchable already
    assert store_label(store(completed=2, total=2)) == "sanguo · 2 files"
    assert store_label(store(completed=1, failed=1, total=2)) == "sanguo · 2 files, 1 failed"
    assert store_label({**store(total=0), "name": ""}) == "vs_sanguo · 0 files"
