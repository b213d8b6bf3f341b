"""Queries as people type them, through the real app: a traditional-script corpus answers a simplified question (and the
other way round) quoting the document's own text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

CHAPTERS = {
    1: "劉備、關羽、張飛三人於桃園之中焚香再拜，結為兄弟，誓同生死。劉備為兄，關羽次之，張飛為弟。",
    2: "卻說曹操引兵屯於官渡，與袁紹相持。許攸來投，獻計燒烏巢之糧。",
    3: "關羽敗走麥城，為吳將所擒，不屈而死。劉備聞之，哭倒於地。張飛亦大哭。",
}


def _client(root: Path, embedder: Any, text: str) -> Any:
    from fastapi.testclient import TestClient

    from ingest import pipeline
    from ingest.settings import get_settings
    from service.app import build_chat_service, create_app
    from service.settings import get_service_settings
    from tests.service.fakes import QueuedEngine

    novel = root / "novel.txt"
    novel.write_text(text, encoding="utf-8")
    kb = get_settings(data_dir=root / "data", collection="trad", chunk_size=120, chunk_overlap=0)
    pipeline.add_paths([novel], kb, embedder=embedder)
    settings = get_service_settings(data_dir=root / "svc")
    chat = build_chat_service(settings, kb, engines={p.name: QueuedEngine(p.name) for p in settings.personas})
    return TestClient(create_app(settings, chat=chat, ui=False))


@pytest.fixture(scope="module")
def traditional(tmp_path_factory, embedder) -> Any:
    text = "".join(f"第{n}回 回目{n}\n{t}\n" for n, t in CHAPTERS.items())
    with _client(tmp_path_factory.mktemp("trad"), embedder, text) as client:
        yield client


def ask(client: Any, question: str) -> dict[str, Any]:
    r = client.post("/v1/chat/completions", json={"model": "kongming-rag",
                                                  "messages": [{"role": "user", "content": question}]})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.integration
@pytest.mark.parametrize(("question", "chapter", "quote"), [
    ("关羽在哪里兵败被擒？", 3, "麥城"), ("關羽在哪裡兵敗被擒？", 3, "麥城"),
    ("刘备、关羽、张飞在什么地方结为兄弟？", 1, "桃園"),
])
def test_a_traditional_corpus_answers_either_script_in_its_own_text(
    traditional: Any, question: str, chapter: int, quote: str
) -> None:
    body = ask(traditional, question)
    answer = body["choices"][0]["message"]["content"]
    assert quote in answer, answer  # the document's own script, not a conversion
    cites = body["kongming"]["citations"]
    assert cites and cites[0]["chapter"] == chapter
    assert quote in cites[0]["snippet"]
