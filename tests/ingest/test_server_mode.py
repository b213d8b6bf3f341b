"""Server-mode Chroma: a real `chroma run` process, used through HttpClient by ingest and retrieval."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ingest import pipeline
from ingest.errors import StoreError
from ingest.retrieval import Retriever
from ingest.settings import get_settings

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def chroma_server(tmp_path):
    exe = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    port = free_port()
    proc = subprocess.Popen(
        [exe, "run", "--path", str(tmp_path / "chroma-server"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=1).read()
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("chroma server did not start")
            time.sleep(0.3)
    yield url, tmp_path / "chroma-server"
    proc.terminate()
    proc.wait(timeout=20)


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
