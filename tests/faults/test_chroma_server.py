"""A Chroma server that dies or restarts under queries and under an ingest: clear errors that name the server
and the fix, a consistent store, and an interrupted ingest that the next run finishes without duplicates."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from ingest import pipeline
from ingest.errors import StoreError
from ingest.kb import COMPLETE
from ingest.retrieval import Retriever
from ingest.settings import get_settings

from .helpers import ChromaServer, cli_env

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path):
    srv = ChromaServer(tmp_path / "chroma-server").start()
    yield srv
    srv.stop()


class KillingEmbedder:
    """The real embedder, which stops the Chroma server once it has embedded `after` passages: the ingest is
    then cut between two of its store writes, always at the same point."""

    def __init__(self, inner, server: ChromaServer, after: int, sig: int):
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.server, self.after, self.sig = server, after, sig
        self.passages = 0

    def embed_queries(self, texts):
        return self.inner.embed_queries(texts)

    def embed_passages(self, texts):
        if self.passages >= self.after and self.server.proc is not None:
            self.server.kill(self.sig)
        self.passages += len(texts)
        return self.inner.embed_passages(texts)


def _assert_names_server_and_fix(message: str, url: str) -> None:
    assert url in message, message
    assert "chroma run" in message and "KONGMING_CHROMA_URL" in message, message


def _chunk_ids(settings) -> list[str]:
    return [c.chunk_id for c in pipeline.open_store(settings).get_chunks()]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
def test_server_lost_mid_ingest_then_the_next_run_finishes_without_duplicates(
    server, novel_file, tmp_path, embedder, sig
):
    settings = get_settings(data_dir=tmp_path / "local", chroma_url=server.url, collection="kb", chunk_size=80,
                            chunk_overlap=20, embed_batch_size=2, embed_flush=4)  # fmt: skip
    with pytest.raises(StoreError) as err:
        pipeline.add_paths([novel_file], settings, embedder=KillingEmbedder(embedder, server, after=4, sig=sig))
    _assert_names_server_and_fix(str(err.value), server.url)
    assert "run the same command again" in str(err.value)

    if sig == signal.SIGKILL:  # what a user of the CLI sees while the server is down: no traceback
        r = subprocess.run([sys.executable, "-m", "ingest.cli", "add", str(novel_file), "--chroma-url", server.url,
                            "--collection", "kb", "--no-progress"], env=cli_env(tmp_path), capture_output=True,
                           text=True, timeout=300)  # fmt: skip
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        _assert_names_server_and_fix(r.stderr, server.url)

    server.start()  # same port, same data
    (rec,) = pipeline.list_documents(settings)
    # committed before the embedding phase: searchable by keyword, partly embedded
    assert rec.status == COMPLETE and 4 <= rec.embedded < rec.n_chunks
    assert Retriever(settings, embedder=embedder).retrieve("桃园结义", k=1, mode="keyword")[0].chapter == 1
    kept = pipeline.open_store(settings).count()
    assert kept == rec.embedded  # the flushes that landed before the server went away are kept

    summary = pipeline.add_paths([novel_file], settings, embedder=embedder)
    (rec,) = pipeline.list_documents(settings)
    assert rec.status == COMPLETE and summary.chunks_embedded == rec.n_chunks - kept  # resumed, not redone
    ids = _chunk_ids(settings)
    assert len(ids) == len(set(ids)) == rec.n_chunks == pipeline.open_store(settings).count()

    reference = settings.model_copy(update={"collection": "reference"})  # the same file ingested in one go
    pipeline.add_paths([novel_file], reference, embedder=embedder)
    (ref,) = pipeline.list_documents(reference)
    assert sorted(ref.committed) == sorted(rec.committed)
    assert Retriever(settings, embedder=embedder).retrieve("草船借箭", k=1)[0].chapter == 3


def test_queries_fail_clearly_while_the_server_is_down_and_work_again_after_a_restart(
    server, novel_file, tmp_path, embedder
):
    settings = get_settings(data_dir=tmp_path / "local", chroma_url=server.url, collection="kb", chunk_size=80,
                            chunk_overlap=20)  # fmt: skip
    pipeline.add_paths([novel_file], settings, embedder=embedder)
    retriever = Retriever(settings, embedder=embedder, refresh_seconds=0)  # one long-lived retriever, as a service
    before = [h.chunk_id for h in retriever.retrieve("草船借箭", k=3)]
    assert before

    server.kill()
    with pytest.raises(StoreError) as err:
        retriever.retrieve("草船借箭", k=3)
    _assert_names_server_and_fix(str(err.value), server.url)
    r = subprocess.run([sys.executable, "-m", "ingest.cli", "search", "草船借箭", "--chroma-url", server.url,
                        "--collection", "kb"], env=cli_env(tmp_path), capture_output=True, text=True,
                       timeout=300)  # fmt: skip
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    _assert_names_server_and_fix(r.stderr, server.url)

    server.start()
    assert [h.chunk_id for h in retriever.retrieve("草船借箭", k=3)] == before  # the same retriever recovers
    server.stop()  # a clean restart between two queries
    server.start()
    assert [h.chunk_id for h in retriever.retrieve("草船借箭", k=3)] == before
    (rec,) = pipeline.list_documents(settings)
    assert rec.status == COMPLETE and pipeline.open_store(settings).count() == rec.n_chunks
