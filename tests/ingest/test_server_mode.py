"""Server-mode Chroma: a real `chroma run` process, used through HttpClient by ingest and retrieval."""

from __future__ import annotations

import pytest

from ingest import pipeline
from ingest.errors import StoreError
from ingest.retrieval import Retriever
from ingest.settings import get_settings

from ..faults.helpers import ChromaServer, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def chroma_server(tmp_path):
    server = ChromaServer(tmp_path / "chroma-server").start()
    yield server.url, server.path
    server.stop()


def test_ingest_and_search_through_a_chroma_server(chroma_server, novel_file, tmp_path, embedder):
    url, server_dir = chroma_server
    settings = get_settings(
        data_dir=tmp_path / "local", chroma_url=url, collection="server", chunk_size=80, chunk_overlap=20
    )
    summary = pipeline.add_paths([novel_file], settings, embedder=embedder)
    assert summary.added_docs == 1 and summary.chunks_added > 5
    assert not (tmp_path / "local" / "store").exists()  # nothing written to an embedded store
    assert server_dir.exists()
    again = pipeline.add_paths([novel_file], settings, embedder=embedder)
    assert again.unchanged == 1 and again.chunks_added == 0
    hits = Retriever(settings, embedder=embedder).retrieve("草船借箭", k=3)
    assert hits and hits[0].chapter == 3
    # a second client (another replica, say) with its own local data dir sees the same knowledge base
    other = settings.model_copy(update={"data_dir": tmp_path / "replica"})
    assert Retriever(other, embedder=embedder).retrieve("桃园结义", k=1)[0].chapter == 1
    pipeline.remove_documents([str(novel_file)], settings)
    assert pipeline.list_documents(settings) == []


def test_unreachable_server_is_a_clear_error(tmp_path):
    settings = get_settings(data_dir=tmp_path, chroma_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StoreError, match="Chroma server"):
        pipeline.list_documents(settings)
