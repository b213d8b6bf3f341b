"""The opt-in sources footer (issue 11, item 16): the numbered sources appended to the answer text, for clients that
read only the standard fields. Requested by `kongming.sources`, the x-kongming-sources header or the server setting;
streamed and not, on chat completions (the Responses API's own tests cover it there)."""

from __future__ import annotations

import json
import re

import pytest

from service.answer.sources import footer, language_of
from service.protocol import Citation

QUESTION = "孔明向鲁肃借了多少只船？"
FOOTER = re.compile(r"\n\n来源：\n\[1\] 《[^》]+》第\d+回")


def cite(n: int, chapter: int | None = 3, title: str | None = "草船借箭") -> Citation:
    return Citation(index=n, doc_id="d1", document="小三国", chapter=chapter, chapter_title=title, snippet="…",
                    score=0.5, chunk_id=f"c{n}")


def test_footer_lines_in_chinese_and_english():
    assert footer([cite(1), cite(2, chapter=None)], "zh") == "\n\n来源：\n[1] 《小三国》第3回 草船借箭\n[2] 《小三国》"
    assert footer([cite(1, title=None)], "en") == "\n\nSources:\n[1] “小三国”, chapter 3"
    assert footer([], "zh") == ""


@pytest.mark.parametrize(("unit", "label"), [("章", "第3章"), ("节", "第3节"), ("卷", "第3卷"), (None, "第3回")])
def test_a_chapter_is_named_by_its_own_unit(unit, label):
    """A document of 章 (or 节, 卷) is cited as such, in the footer and on the page; 回 when the store has no unit."""
    from service.ui import citation_line

    c = cite(1).model_copy(update={"chapter_unit": unit})
    assert footer([c], "zh") == f"\n\n来源：\n[1] 《小三国》{label} 草船借箭"
    assert citation_line(c).startswith(f"[1] {label} 草船借箭")


@pytest.mark.parametrize(("question", "lang"), [
    ("孔明向鲁肃借了多少只船？", "zh"), ("How many boats did Kongming borrow?", "en"), ("诸葛亮 who?", "zh"),
    ("2024？", "zh"), ("Zhuge Liang's fans", "en"),
])  # fmt: skip
def test_the_footer_speaks_the_questions_language(question, lang):
    assert language_of(question) == lang


def chat(client, headers=None, **extra):
    body = {"model": "kongming-rag", "messages": [{"role": "user", "content": QUESTION}], **extra}
    return client.post("/v1/chat/completions", json=body, headers=headers or {})


def streamed_text(r) -> tuple[str, list[dict]]:
    events = [json.loads(b[6:]) for b in r.text.split("\n\n") if b.startswith("data: ") and b != "data: [DONE]"]
    chunks = [e for e in events if e.get("choices")]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks), chunks


@pytest.mark.integration
def test_sources_appended_only_when_asked(make_client):
    client = make_client()
    plain = chat(client).json()
    assert "来源：" not in plain["choices"][0]["message"]["content"]
    asked = chat(client, kongming={"sources": "append"}).json()
    text = asked["choices"][0]["message"]["content"]
    assert text.startswith(plain["choices"][0]["message"]["content"])
    assert FOOTER.search(text) and asked["choices"][0]["finish_reason"] == "stop"
    n = len(asked["kongming"]["citations"])
    assert text.count("\n[") == n and f"[{n}] 《" in text  # one line per citation
    by_header = chat(client, headers={"x-kongming-sources": "append"}).json()
    assert by_header["choices"][0]["message"]["content"] == text


@pytest.mark.integration
def test_sources_streamed_as_the_last_text_before_the_finish(make_client):
    client = make_client()
    text, chunks = streamed_text(chat(client, stream=True, kongming={"sources": "append"}))
    assert FOOTER.search(text) and text == chat(client, kongming={"sources": "append"}).json()["choices"][0][
        "message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert "来源：" in chunks[-2]["choices"][0]["delta"]["content"]  # the footer is one piece, just before it
    plain, _ = streamed_text(chat(client, stream=True))
    assert "来源：" not in plain and text.startswith(plain)


@pytest.mark.integration
def test_server_setting_appends_and_a_request_can_opt_out(make_client):
    client = make_client(append_sources=True)
    assert FOOTER.search(chat(client).json()["choices"][0]["message"]["content"])
    text, _ = streamed_text(chat(client, stream=True))
    assert FOOTER.search(text)
    assert "来源：" not in chat(client, kongming={"sources": "none"}).json()["choices"][0]["message"]["content"]
    assert "来源：" not in chat(client, headers={"x-kongming-sources": "none"}).json()["choices"][0]["message"][
        "content"]


@pytest.mark.integration
def test_persona_answer_without_citations_gets_no_footer(make_client):
    from tests.service.fakes import QueuedEngine

    client = make_client(engines={"zhuge-liang": QueuedEngine("z", ["亮在此。"])})
    body = {"model": "kongming-persona-zhuge-liang", "messages": [{"role": "user", "content": "先生安好？"}],
            "kongming": {"sources": "append"}}
    assert client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"] == "亮在此。"


@pytest.mark.integration
@pytest.mark.parametrize("bad", [{"kongming": {"sources": "yes"}}, {"headers": {"x-kongming-sources": "please"}}])
def test_a_bad_sources_value_is_a_400_naming_it(make_client, bad):
    r = chat(make_client(), **bad)
    assert r.status_code == 400
    assert r.json()["error"]["param"] in ("kongming.sources", "x-kongming-sources")
