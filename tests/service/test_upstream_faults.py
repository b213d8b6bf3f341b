"""The model server down, slow, failing or dropping the connection mid-stream, seen through the running service with
the official `openai` client: OpenAI-shaped 502/503/504 or a clean error event, never a hang; recovery when the model
server comes back; a RAG answer falls back to the extractive one and says so."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .conftest import ServerThread, UpstreamState, fake_upstream_app, free_port

pytestmark = pytest.mark.integration

FACT = "孔明向鲁肃借了多少只船？"


@pytest.fixture
def service(serve: Callable[..., str]) -> Callable[..., str]:
    """The service (real uvicorn) against an upstream URL; the 诸葛亮 persona asks the upstream for `persona_model`
    (the fake upstream's behaviour is picked by the model name)."""
    from service.settings import ZHUGE_LIANG

    def start(upstream_url: str, persona_model: str = "echo", **overrides: Any) -> str:
        persona = ZHUGE_LIANG.model_copy(update={"served_model": persona_model})
        return serve(upstream_url=upstream_url, personas=[persona], **overrides)

    return start


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    server = ServerThread(fake_upstream_app(UpstreamState())).start()
    yield server.url + "/v1"
    server.stop()


def client(url: str) -> Any:
    import openai

    return openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)


def ask(url: str, model: str = "kongming-persona-zhuge-liang", **kw: Any) -> Any:
    return client(url).chat.completions.create(model=model, messages=[{"role": "user", "content": "先生安好？"}], **kw)


def test_slow_upstream_is_a_504_after_the_configured_timeout(service: Callable[..., str], upstream: str) -> None:
    import openai

    url = service(upstream, persona_model="slow", upstream_timeout=0.5)  # the fake answers after 2 s
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as err:
            ask(url, stream=stream)
        assert err.value.status_code == 504
        assert err.value.body["code"] == "upstream_timeout"  # type: ignore[index]


def test_upstream_errors_are_502(service: Callable[..., str], upstream: str) -> None:
    import openai

    for model in ("error500", "garbage"):
        url = service(upstream, persona_model=model)
        with pytest.raises(openai.APIStatusError) as err:
            ask(url)
        assert err.value.status_code == 502 and err.value.body["type"] == "upstream_error"  # type: ignore[index]


def test_dropped_mid_stream_ends_with_an_error_event_and_the_service_goes_on(
    service: Callable[..., str], upstream: str
) -> None:
    import httpx
    import openai

    url = service(upstream, persona_model="drop")  # three tokens, then the connection breaks
    pieces: list[str] = []
    with pytest.raises(openai.APIError, match="broke off the stream"):
        for chunk in ask(url, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
    assert "".join(pieces) == "回声："  # what arrived before the break was passed on
    raw = httpx.post(url + "/chat/completions", timeout=30, json={
        "model": "kongming-persona-zhuge-liang", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    events = [line for line in raw.text.split("\n") if line.startswith("data: ")]
    assert '"error"' in events[-2] and events[-1] == "data: [DONE]"  # an error event, then a clean end
    healthy = service(upstream)  # the same service code with a healthy upstream still answers
    assert ask(healthy).choices[0].message.content.startswith("回声：")


def test_upstream_down_then_back(service: Callable[..., str]) -> None:
    import openai

    port = free_port()
    url = service(f"http://127.0.0.1:{port}/v1", upstream_timeout=5)
    with pytest.raises(openai.APIStatusError) as err:
        ask(url)
    assert err.value.status_code == 503 and err.value.body["code"] == "upstream_unavailable"  # type: ignore[index]
    back = ServerThread(fake_upstream_app(UpstreamState()), port=port).start()
    try:
        assert ask(url).choices[0].message.content.startswith("回声：")  # no restart of the service needed
        text = "".join(c.choices[0].delta.content or "" for c in ask(url, stream=True) if c.choices)
        assert text.startswith("回声：")
    finally:
        back.stop()


def test_rag_falls_back_to_the_extractive_answer_and_says_so(service: Callable[..., str], upstream: str) -> None:
    for rag_model in ("error500", "slow"):
        url = service(upstream, rag_model=rag_model, upstream_timeout=0.5)
        done = client(url).chat.completions.create(model="kongming-rag",
                                                   messages=[{"role": "user", "content": FACT}])  # fmt: skip
        ext = done.model_extra["kongming"]
        assert "model server failed" in ext["note"] and "extractive" in ext["note"]
        assert "二十" in done.choices[0].message.content and ext["citations"]
        assert all(f"[{c['index']}]" in done.choices[0].message.content for c in ext["citations"])
        chunks = list(client(url).chat.completions.create(
            model="kongming-rag", messages=[{"role": "user", "content": FACT}], stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == done.choices[0].message.content
        last = chunks[-1].model_extra["kongming"]
        assert "model server failed" in last["note"] and last["citations"] == ext["citations"]
