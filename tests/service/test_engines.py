"""Engines: the OpenAI-compatible upstream client against a real fake server, and the in-process engine."""

from __future__ import annotations

import asyncio
import itertools
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.engines import Delta, Engine, LocalEngine, OpenAICompatibleEngine, SamplingParams
from service.errors import (
    BadRequest,
    ContextTooLong,
    EngineUnavailable,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

from .conftest import CONTEXT_ERROR, FakeUpstream, ServerThread, fake_upstream_app, free_port

pytestmark = pytest.mark.anyio

HELLO = [{"role": "system", "content": "你是助手。"}, {"role": "user", "content": "你好，诸葛亮"}]
GREEDY = SamplingParams(max_tokens=24, temperature=0.0)


async def collect(stream) -> tuple[str, list[Delta]]:
    deltas = [d async for d in stream]
    return "".join(d.text for d in deltas), deltas


def test_import_is_light() -> None:
    """Importing the engines must not pull in torch/transformers (the CLI and app start fast)."""
    code = (
        "import sys, service.engines, service.engines.local, service.engines.upstream; "
        "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


# -- OpenAICompatibleEngine --------------------------------------------------------------------------------------


async def test_generate_text_usage_and_params(fake_upstream: FakeUpstream) -> None:
    engine = OpenAICompatibleEngine(fake_upstream.base_url, "echo", api_key="sk-test", name="kongming-rag")
    assert isinstance(engine, Engine) and engine.name == "kongming-rag"
    params = SamplingParams(max_tokens=100, temperature=0.3, top_p=0.9, stop=["。"], seed=7)
    try:
        out = await engine.generate(HELLO, params)
    finally:
        await engine.aclose()
    assert out.text == "回声：你好，诸葛亮"
    assert out.finish_reason == "stop"
    assert out.prompt_tokens == len("你是助手。") + len("你好，诸葛亮")
    assert out.completion_tokens == len(out.text)
    body = fake_upstream.state.requests[0]
    assert body["model"] == "echo" and body["messages"] == HELLO
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["stop"], body["seed"]) == (
        100, 0.3, 0.9, ["。"], 7,
    )
    assert "stream" not in body
    assert fake_upstream.state.headers[0]["authorization"] == "Bearer sk-test"


async def test_generate_without_key_sends_no_authorization(fake_upstream: FakeUpstream) -> None:
    engine = OpenAICompatibleEngine(fake_upstream.base_url + "/", "echo")
    try:
        out = await engine.generate(HELLO, SamplingParams(max_tokens=2))
    finally:
        await engine.aclose()
    assert (out.text, out.finish_reason, out.completion_tokens) == ("回声", "length", 2)
    assert "authorization" not in fake_upstream.state.headers[0]
    assert "seed" not in fake_upstream.state.requests[0] and "stop" not in fake_upstream.state.requests[0]


async def test_stream_pieces_and_final_usage(fake_upstream: FakeUpstream) -> None:
    engine = OpenAICompatibleEngine(fake_upstream.base_url, "echo")
    try:
        text, deltas = await collect(engine.stream(HELLO, SamplingParams(max_tokens=100)))
        whole = await engine.generate(HELLO, SamplingParams(max_tokens=100))
    finally:
        await engine.aclose()
    assert text == whole.text == "回声：你好，诸葛亮"
    # pieces that arrive together may share a delta; every delta but the closing one carries text
    assert 2 <= len(deltas) <= len(text) + 1
    assert all(d.finish_reason is None and d.text for d in deltas[:-1])
    last = deltas[-1]
    assert (last.text, last.finish_reason) == ("", "stop")
    assert (last.prompt_tokens, last.completion_tokens) == (whole.prompt_tokens, whole.completion_tokens)
    body = fake_upstream.state.requests[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


async def test_tokens_that_arrive_together_go_out_as_one_delta(fake_upstream: FakeUpstream) -> None:
    engine = OpenAICompatibleEngine(fake_upstream.base_url, "burst")
    try:
        text, deltas = await collect(engine.stream(HELLO, SamplingParams(max_tokens=100)))
    finally:
        await engine.aclose()
    assert text == "回声：你好，诸葛亮"
    # one read held every token but the last (whose event was cut in two), then the last, then the closing delta
    assert [d.text for d in deltas] == ["回声：你好，诸葛", "亮", ""]
    assert deltas[-1].finish_reason == "stop" and deltas[-1].completion_tokens == len(text)


async def test_streams_reuse_one_keepalive_connection(fake_upstream: FakeUpstream) -> None:
    engine = OpenAICompatibleEngine(fake_upstream.base_url, "echo")
    try:
        for _ in range(4):
            await collect(engine.stream(HELLO, SamplingParams()))
        await engine.generate(HELLO, SamplingParams())
    finally:
        await engine.aclose()
    assert len(set(fake_upstream.state.clients)) == 1, fake_upstream.state.clients


async def test_retries_connection_refused_then_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    from .conftest import UpstreamState

    port = free_port()
    engine = OpenAICompatibleEngine(f"http://127.0.0.1:{port}/v1", "echo", retries=6)
    server = ServerThread(fake_upstream_app(UpstreamState()), port=port)

    async def start_late() -> None:
        await asyncio.sleep(0.15)  # the first attempt(s) meet a closed port
        await asyncio.to_thread(server.start)

    caplog.set_level(logging.WARNING, logger="service.engines.upstream")
    try:
        starter = asyncio.create_task(start_late())
        out = await engine.generate(HELLO, SamplingParams())
        await starter
    finally:
        await engine.aclose()
        server.stop()
    assert out.text == "回声：你好，诸葛亮"
    assert any("retry 1/6" in r.getMessage() for r in caplog.records)


async def test_unreachable_upstream_is_503() -> None:
    engine = OpenAICompatibleEngine(f"http://127.0.0.1:{free_port()}/v1", "echo", retries=1)
    try:
        with pytest.raises(UpstreamUnavailable) as err:
            await engine.generate(HELLO, SamplingParams())
        assert err.value.status == 503
        with pytest.raises(UpstreamUnavailable):
            await collect(engine.stream(HELLO, SamplingParams()))
    finally:
        await engine.aclose()


async def test_slow_upstream_is_504(fake_upstream: FakeUpstream) -> None:
    engine = OpenAICompatibleEngine(fake_upstream.base_url, "slow", timeout=0.3)
    try:
        with pytest.raises(UpstreamTimeout) as err:
            await engine.generate(HELLO, SamplingParams())
        assert err.value.status == 504
    finally:
        await engine.aclose()
    assert len(fake_upstream.state.requests) == 1  # a timeout is not retried


async def test_upstream_500_is_502(fake_upstream: FakeUpstream) -> None:
    engine = OpenAICompatibleEngine(fake_upstream.base_url, "error500")
    try:
        with pytest.raises(UpstreamError) as err:
            await engine.generate(HELLO, SamplingParams())
        assert err.value.status == 502 and "engine crashed" in err.value.message
        with pytest.raises(UpstreamError) as err:
            await collect(engine.stream(HELLO, SamplingParams()))
        assert type(err.value) is UpstreamError
    finally:
        await engine.aclose()


async def test_context_length_400_is_context_too_long(fake_upstream: FakeUpstream) -> None:
    engine = OpenAICompatibleEngine(fake_upstream.base_url, "context")
    try:
        with pytest.raises(ContextTooLong) as err:
            await engine.generate(HELLO, SamplingParams())
        assert err.value.message == CONTEXT_ERROR
        assert (err.value.status, err.value.code) == (400, "context_length_exceeded")
        with pytest.raises(ContextTooLong):
            await collect(engine.stream(HELLO, SamplingParams()))
    finally:
        await engine.aclose()


async def test_other_400_is_bad_request(fake_upstream: FakeUpstream) -> None:
    engine = OpenAICompatibleEngine(fake_upstream.base_url, "bad")
    try:
        with pytest.raises(BadRequest) as err:
            await engine.generate(HELLO, SamplingParams())
    finally:
        await engine.aclose()
    assert not isinstance(err.value, ContextTooLong)
    assert err.value.message == "temperature must be non-negative"


async def test_unknown_upstream_model_is_502(fake_upstream: FakeUpstream) -> None:
    """The service picked the upstream model name, so a 404 for it is a deployment fault, not the caller's."""
    engine = OpenAICompatibleEngine(fake_upstream.base_url, "missing")
    try:
        with pytest.raises(UpstreamError) as err:
            await engine.generate(HELLO, SamplingParams())
    finally:
        await engine.aclose()
    assert err.value.status == 502 and "does not exist" in err.value.message


async def test_malformed_body_is_502(fake_upstream: FakeUpstream) -> None:
    engine = OpenAICompatibleEngine(fake_upstream.base_url, "garbage")
    try:
        with pytest.raises(UpstreamError, match="malformed"):
            await engine.generate(HELLO, SamplingParams())
        with pytest.raises(UpstreamError, match="ended the stream"):
            await collect(engine.stream(HELLO, SamplingParams()))
    finally:
        await engine.aclose()


async def test_dropped_mid_stream_is_502_and_not_resent(fake_upstream: FakeUpstream) -> None:
    engine = OpenAICompatibleEngine(fake_upstream.base_url, "drop", retries=3)
    received: list[str] = []
    try:
        with pytest.raises(UpstreamError) as err:
            async for delta in engine.stream(HELLO, SamplingParams()):
                received.append(delta.text)
    finally:
        await engine.aclose()
    assert type(err.value) is UpstreamError and err.value.status == 502
    assert "".join(received) == "回声："  # what came before the break reached the consumer
    assert len(fake_upstream.state.requests) == 1


async def test_closing_stream_disconnects_upstream(fake_upstream: FakeUpstream) -> None:
    """Our client going away closes the stream; the upstream must see its connection go (vLLM then aborts)."""
    engine = OpenAICompatibleEngine(fake_upstream.base_url, "endless")
    try:
        stream = engine.stream(HELLO, SamplingParams())
        received = [await anext(stream) for _ in range(3)]
        assert [d.text for d in received] == ["0 ", "1 ", "2 "]
        await stream.aclose()
        seen = await asyncio.to_thread(fake_upstream.state.stream_closed_early.wait, 5.0)
    finally:
        await engine.aclose()
    assert seen, "the upstream kept streaming after the consumer closed the stream"
    assert not fake_upstream.state.stream_finished.is_set()


async def test_cancelled_consumer_task_disconnects_upstream(fake_upstream: FakeUpstream) -> None:
    engine = OpenAICompatibleEngine(fake_upstream.base_url, "endless")
    got_some = asyncio.Event()

    async def consume() -> None:
        async for _ in engine.stream(HELLO, SamplingParams()):
            got_some.set()

    try:
        task = asyncio.create_task(consume())
        await asyncio.wait_for(got_some.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        seen = await asyncio.to_thread(fake_upstream.state.stream_closed_early.wait, 5.0)
    finally:
        await engine.aclose()
    assert seen


# -- LocalEngine ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_engine(tiny_chat_model: Path) -> LocalEngine:
    return LocalEngine(tiny_chat_model, name="tiny")


async def test_local_generate_counts_tokens(local_engine: LocalEngine, tiny_chat_model: Path) -> None:
    from transformers import AutoTokenizer

    from finetune.models.template import encode_chat

    assert isinstance(local_engine, Engine)
    out = await local_engine.generate(HELLO, GREEDY)
    prompt = encode_chat(AutoTokenizer.from_pretrained(tiny_chat_model), HELLO)
    assert out.prompt_tokens == len(prompt)
    # The tiny model never picks end-of-turn (see tests/tinymodel.py), so it runs to max_tokens.
    assert (out.completion_tokens, out.finish_reason) == (24, "length")
    assert out.text and "\ufffd" not in out.text
    assert local_engine.context_length == 512


async def test_local_stream_equals_generate_when_greedy(local_engine: LocalEngine) -> None:
    whole = await local_engine.generate(HELLO, GREEDY)
    text, deltas = await collect(local_engine.stream(HELLO, GREEDY))
    assert text == whole.text
    assert len(deltas) > 2
    last = deltas[-1]
    assert (last.finish_reason, last.prompt_tokens, last.completion_tokens) == (
        "length", whole.prompt_tokens, whole.completion_tokens,
    )


async def test_local_stop_strings(local_engine: LocalEngine) -> None:
    full = (await local_engine.generate(HELLO, GREEDY)).text
    stop = full[6:9]
    expected = full[: full.find(stop)]
    params = SamplingParams(max_tokens=24, temperature=0.0, stop=["不会出现的停止词", stop])
    out = await local_engine.generate(HELLO, params)
    assert (out.text, out.finish_reason) == (expected, "stop")
    text, deltas = await collect(local_engine.stream(HELLO, params))
    assert text == expected and deltas[-1].finish_reason == "stop"
    assert out.completion_tokens < 24


async def test_local_sampling_with_seed_is_repeatable(local_engine: LocalEngine) -> None:
    params = SamplingParams(max_tokens=16, temperature=0.9, seed=123)
    first = await local_engine.generate(HELLO, params)
    second = await local_engine.generate(HELLO, params)
    assert first.text == second.text


async def test_local_queues_concurrent_requests(local_engine: LocalEngine) -> None:
    conversations = [[{"role": "user", "content": q}] for q in ("你好", "请介绍诸葛亮", "草船借箭")]
    expected = [(await local_engine.generate(m, GREEDY)).text for m in conversations]
    spans: list[tuple[float, float]] = []

    async def run(messages: list[dict[str, str]]) -> str:
        parts: list[str] = []
        first = None
        async for delta in local_engine.stream(messages, GREEDY):
            first = first or time.perf_counter()
            parts.append(delta.text)
        spans.append((first or 0.0, time.perf_counter()))
        return "".join(parts)

    results = await asyncio.gather(*(run(m) for m in conversations))
    assert results == expected  # concurrency changes nothing in the outputs
    spans.sort()
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, "two generations overlapped"


async def test_local_cancellation_stops_generation(local_engine: LocalEngine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="service.engines.local")
    await local_engine.generate(HELLO, SamplingParams(max_tokens=1))  # loaded and warm
    stream = local_engine.stream(HELLO, SamplingParams(max_tokens=480, temperature=0.0))
    await anext(stream)
    await anext(stream)
    await stream.aclose()  # returns once the worker has stopped
    stopped = [r.getMessage() for r in caplog.records if "stopped early" in r.getMessage()]
    assert stopped, "generation was not told to stop"
    assert int(stopped[-1].split("after ")[1].split()[0]) < 480
    out = await local_engine.generate(HELLO, SamplingParams(max_tokens=3, temperature=0.0))
    assert out.completion_tokens == 3  # the engine is free again

    # The HTTP layer's task being cancelled (client gone) stops the generation the same way.
    caplog.clear()
    got_some = asyncio.Event()

    async def consume() -> None:
        async for _ in local_engine.stream(HELLO, SamplingParams(max_tokens=480, temperature=0.0)):
            got_some.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_some.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    out = await local_engine.generate(HELLO, SamplingParams(max_tokens=3, temperature=0.0))
    assert out.completion_tokens == 3
    stopped = [r.getMessage() for r in caplog.records if "stopped early" in r.getMessage()]
    assert stopped and int(stopped[-1].split("after ")[1].split()[0]) < 480


async def test_local_context_too_long(tiny_chat_model: Path, local_engine: LocalEngine) -> None:
    with pytest.raises(ContextTooLong) as err:
        await local_engine.generate([{"role": "user", "content": "诸葛亮" * 600}], GREEDY)
    assert "512" in err.value.message and err.value.code == "context_length_exceeded"
    short = LocalEngine(tiny_chat_model, max_context=16)
    with pytest.raises(ContextTooLong):
        await collect(short.stream(HELLO, GREEDY))
    # A prompt that fits leaves room for fewer tokens than asked: the completion is cut at the context.
    roomy = LocalEngine(tiny_chat_model, max_context=40)
    out = await roomy.generate(HELLO, SamplingParams(max_tokens=100, temperature=0.0))
    assert out.prompt_tokens + out.completion_tokens == 40 and out.finish_reason == "length"


async def test_local_missing_model_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(EngineUnavailable) as err:
        await LocalEngine(missing).generate(HELLO, GREEDY)
    assert str(missing) in err.value.message and "finetune merge" in err.value.message
    assert err.value.status == 503


async def test_local_adapter_changes_outputs(tiny_chat_model: Path, local_engine: LocalEngine, tmp_path: Path) -> None:
    from tests.tinymodel import build_random_lora

    adapter = build_random_lora(tiny_chat_model, tmp_path / "lora")
    tuned = LocalEngine(tiny_chat_model, adapter_path=adapter)
    assert tuned.name == "lora"
    base_out = await local_engine.generate(HELLO, GREEDY)
    tuned_out = await tuned.generate(HELLO, GREEDY)
    assert tuned_out.text != base_out.text
    assert tuned_out.prompt_tokens == base_out.prompt_tokens
    with pytest.raises(EngineUnavailable, match=r"adapter_config\.json"):
        await LocalEngine(tiny_chat_model, adapter_path=tmp_path).generate(HELLO, GREEDY)
