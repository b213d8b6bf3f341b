"""Scale-out: service replicas share one Chroma server and one upstream and keep no knowledge-base state of
their own that could go stale: what one replica ingests, the other answers from (and stops citing once removed)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import NOVEL
from tests.service.conftest import ServerThread, UpstreamState, fake_upstream_app, free_port

KEY = "replica-test-key"
COLLECTION = "replicas"
N_DOCS = 6


def _document(i: int) -> str:
    """A distinct small document: the test novel's second chapter under a heading that names a unique keeper."""
    start = NOVEL.index("　　却说南阳")
    end = NOVEL.index("    正文 第三回")
    keeper = f"守将{'甲乙丙丁戊己庚辛'[i]}{i}"
    return f"第{i + 1}卷 守城记\n\n　　守将编号{i}号名叫{keeper}，镇守第{i}座城池。\n" + NOVEL[start:end]


# -- unit: the retriever sees writes made by another client ------------------------------------------------------


def test_knowledge_base_sees_documents_another_process_added(settings: Any, novel_file: Path, embedder: Any) -> None:
    """A replica that opened an empty knowledge base answers from documents added later by someone else (the
    other replica, `ingest add`), and forgets removed ones: its view follows the store, not its start-up."""
    from ingest import pipeline
    from ingest.retrieval import Retriever
    from service.answer.retrieval import KnowledgeBase

    kb = KnowledgeBase(settings, retriever=Retriever(settings, embedder=embedder, refresh_seconds=0))
    assert not kb.available() and "empty" in (kb.error or "")
    pipeline.add_paths([novel_file], settings, embedder=embedder)  # another writer, not through kb
    assert kb.available()
    hits = kb.search("草船借箭", k=3)
    assert hits and hits[0].chapter == 3
    assert "孔明" in kb.entities()
    pipeline.remove_documents([str(novel_file)], settings)
    assert not kb.available() and kb.search("草船借箭", k=3) == []


def test_a_knowledge_base_that_does_not_exist_is_reported_not_created(settings: Any, novel_file: Path,
                                                                       embedder: Any) -> None:
    """A mistyped KONGMING_COLLECTION (`kongming serve`, `kongming ask`) names the knowledge bases there are and
    leaves no empty one behind under the wrong name."""
    from ingest import pipeline
    from ingest.store import list_collections, make_client
    from service.answer.retrieval import KnowledgeBase

    pipeline.add_paths([novel_file], settings, embedder=embedder)
    typo = settings.model_copy(update={"collection": "defualt"})
    kb = KnowledgeBase(typo)
    assert not kb.available() and kb.search("草船借箭", k=3) == [] and kb.entities() == frozenset()
    assert f"'defualt' does not exist (knowledge bases here: {settings.collection})" in (kb.error or "")
    assert list_collections(make_client(settings)) == [settings.collection]
    pipeline.add_paths([novel_file], typo, embedder=embedder)  # once it is made, it is read
    assert kb.available()


# -- integration: two replica processes ---------------------------------------------------------------------------


@dataclass
class Replica:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])


def _wait(url: str, proc: subprocess.Popen[bytes], what: str, log: Path | None, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            pass
        tail = log.read_text(errors="replace")[-3000:] if log else ""
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{tail}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not answer {url} in {timeout} s:\n{tail}")
        time.sleep(0.3)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture
def chroma_url(tmp_path: Path) -> Iterator[str]:
    exe = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    port = free_port()
    proc = subprocess.Popen(
        [exe, "run", "--path", str(tmp_path / "chroma"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(f"{url}/api/v2/heartbeat", proc, "chroma server", None, timeout=60)
        yield url
    finally:
        _stop(proc)


@pytest.fixture
def upstream() -> Iterator[tuple[str, UpstreamState]]:
    state = UpstreamState()
    server = ServerThread(fake_upstream_app(state)).start()
    yield f"{server.url}/v1", state
    server.stop()


@pytest.fixture
def replicas(tmp_path: Path, chroma_url: str, upstream: tuple[str, UpstreamState]) -> Iterator[list[Replica]]:
    """Two `kongming serve` processes, each with its own data dir, on one Chroma server and one upstream."""
    exe = shutil.which("kongming") or str(Path(sys.executable).with_name("kongming"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KONGMING_")}
    env.update(
        KONGMING_API_KEYS=json.dumps([KEY]), KONGMING_COLLECTION=COLLECTION, KONGMING_CHUNK_SIZE="80",
        KONGMING_CHUNK_OVERLAP="20", HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
    )  # fmt: skip
    out: list[Replica] = []
    try:
        for i in range(2):
            port = free_port()
            log = tmp_path / f"replica{i}.log"
            with open(log, "wb") as f:
                proc = subprocess.Popen(
                    [exe, "serve", "--host", "127.0.0.1", "--port", str(port), "--no-ui",
                     "--upstream-url", upstream[0], "--chroma-url", chroma_url, "--data-dir", str(tmp_path / f"r{i}")],
                    stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                )  # fmt: skip
            out.append(Replica(proc, f"http://127.0.0.1:{port}", log))
        for r in out:
            _wait(f"{r.url}/health", r.proc, "replica", r.log)
        yield out
    finally:
        for r in out:
            _stop(r.proc)


def _ask(client: httpx.Client, base: str, question: str, stream: bool = False) -> dict[str, Any]:
    body = {"model": "kongming-rag", "messages": [{"role": "user", "content": question}], "stream": stream}
    headers = {"Authorization": f"Bearer {KEY}"}
    if not stream:
        r = client.post(f"{base}/v1/chat/completions", json=body, headers=headers)
        assert r.status_code == 200, r.text
        return dict(r.json()["kongming"])
    with client.stream("POST", f"{base}/v1/chat/completions", json=body, headers=headers) as r:
        assert r.status_code == 200, r.read()
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ") and line != "data: [DONE]"]
    last = json.loads(events[-1])
    assert "error" not in last, last
    return dict(last["kongming"])


def _cited_docs(ext: dict[str, Any]) -> set[str]:
    return {c["doc_id"] for c in ext["citations"]}


@pytest.mark.integration
def test_two_replicas_ingest_on_one_and_answer_on_the_other(
    replicas: list[Replica], chroma_url: str, upstream: tuple[str, UpstreamState], tmp_path: Path
) -> None:
    from ingest.pipeline import open_store
    from ingest.settings import get_settings

    writer, reader = replicas
    client = httpx.Client(timeout=120)
    # the reader opens the knowledge base while it is empty (the state a stale replica would keep)
    first = _ask(client, reader.url, "守将编号0号是谁？")
    assert first["citations"] == []

    docs = {f"keep{i}.txt": _document(i).encode("utf-8") for i in range(N_DOCS)}
    uploads: list[dict[str, Any]] = []
    errors: list[str] = []
    stop = threading.Event()
    answers: list[dict[str, Any]] = []

    def upload(name: str) -> None:
        r = client.post(f"{writer.url}/v1/kb/documents", headers={"Authorization": f"Bearer {KEY}"},
                        files={"files": (name, docs[name], "text/plain")})
        if r.status_code != 200:
            errors.append(f"upload {name}: {r.status_code} {r.text}")
        else:
            uploads.append(r.json())

    def query() -> None:
        i = 0
        while not stop.is_set():
            try:
                answers.append(_ask(client, reader.url, f"守将编号{i % N_DOCS}号镇守哪座城池？", stream=i % 2 == 1))
            except AssertionError as exc:
                errors.append(f"query: {exc}")
            i += 1

    with ThreadPoolExecutor(max_workers=5) as pool:
        readers = [pool.submit(query) for _ in range(2)]
        # every document once, the first one twice (a retry through a load balancer): no duplicate may come of it
        writes = [pool.submit(upload, name) for name in [*docs, next(iter(docs))]]
        for w in writes:
            w.result()
        stop.set()
        for q in readers:
            q.result()
    assert not errors, errors
    assert answers, "no query ran during the ingest"
    assert sum(u["added"] for u in uploads) == N_DOCS and sum(u["unchanged"] for u in uploads) == 1
    # an upload answers once its document is keyword-searchable; the writer embeds them in the background
    deadline = time.monotonic() + 120
    while True:
        listed = client.get(f"{writer.url}/v1/kb/documents", headers={"Authorization": f"Bearer {KEY}"}).json()
        if all(d["embedded_chunks"] == d["chunks"] for d in listed["data"]):
            break
        assert time.monotonic() < deadline, listed
        time.sleep(0.5)

    # the store: every document once, complete, its chunks exactly the visible ones, none lost, none twice
    store = open_store(get_settings(data_dir=tmp_path / "inspect", chroma_url=chroma_url, collection=COLLECTION))
    records = store.records()
    assert sorted(r.source.rsplit("/", 1)[-1] for r in records.values()) == sorted(docs)
    assert {r.status for r in records.values()} == {"complete"}
    committed = [c for r in records.values() for c in r.committed]
    assert len(committed) == len(set(committed)) == sum(u["chunks_added"] for u in uploads)
    assert store.all_chunk_ids() == set(committed)
    chunks = list(store.get_chunks())
    per_doc = Counter(c.metadata["doc_id"] for c in chunks)
    assert per_doc == {d: r.n_chunks for d, r in records.items()}
    spans = [(c.metadata["doc_id"], c.metadata["start_char"]) for c in chunks]
    assert len(spans) == len(set(spans)), "a stretch of a document is stored twice"

    # the reader answers from every document the writer added (its keyword index and records followed the store)
    by_name = {r.source.rsplit("/", 1)[-1]: d for d, r in records.items()}
    for i in range(N_DOCS):
        doc_id = by_name[f"keep{i}.txt"]
        deadline = time.monotonic() + 10
        while doc_id not in _cited_docs(_ask(client, reader.url, f"守将编号{i}号镇守哪座城池？")):
            assert time.monotonic() < deadline, f"the reader never cites keep{i}.txt"
            time.sleep(0.5)
    listed = client.get(f"{reader.url}/v1/kb/documents", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert sorted(d["chunks"] for d in listed["data"]) == sorted(r.n_chunks for r in records.values())

    # a removal through the writer reaches the reader too
    gone = by_name["keep0.txt"]
    r = client.delete(f"{writer.url}/v1/kb/documents/{gone}", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 10
    while gone in _cited_docs(_ask(client, reader.url, "守将编号0号镇守哪座城池？", stream=True)):
        assert time.monotonic() < deadline, "the reader still cites a removed document"
        time.sleep(0.5)
    assert store.all_chunk_ids() == {c for d, rec in store.records().items() for c in rec.committed}

    # both replicas speak to the one upstream for the persona route
    state = upstream[1]
    for rep in replicas:
        reply = client.post(f"{rep.url}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                            json={"model": "kongming-persona-zhuge-liang",
                                  "messages": [{"role": "user", "content": "丞相安好"}]})
        assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"].startswith("回声")
    assert len(state.requests) == 2
    client.close()
