"""The official `openai` client against the real service over HTTP, with a fake upstream or real vLLM behind it."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_openai_client_non_streaming_and_streaming(serve):
    import openai

    from tests.service.fakes import QueuedEngine

    url = serve(engines={"zhuge-liang": QueuedEngine("z", ["亮以为，谋事在人，成事在天。"] * 2)})
    client = openai.OpenAI(base_url=url, api_key="unused")
    assert "kongming" in [m.id for m in client.models.list()]

    done = client.chat.completions.create(
        model="kongming-rag", messages=[{"role": "user", "content": "孔明向鲁肃借了多少只船？"}]
    )
    assert "二十只" in done.choices[0].message.content
    ext = done.model_extra["kongming"]
    assert ext["route"]["route"] == "rag" and ext["citations"][0]["chapter"] == 3
    assert done.usage.total_tokens > 0

    raw = client.chat.completions.with_raw_response.create(
        model="kongming-persona-zhuge-liang", messages=[{"role": "user", "content": "先生安好？"}]
    )
    assert raw.headers["x-kongming-route"] == "persona"
    assert raw.parse().choices[0].message.content == "亮以为，谋事在人，成事在天。"

    chunks = list(client.chat.completions.create(
        model="kongming-persona-zhuge-liang", messages=[{"role": "user", "content": "先生安好？"}], stream=True,
        stream_options={"include_usage": True},
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "亮以为，谋事在人，成事在天。"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-2].model_extra["kongming"]["route"]["route"] == "persona"

    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="kongming", messages=[{"role": "user", "content": "hi"}], n=3)


def test_curl_shaped_request_with_api_key(serve):
    import httpx

    url = serve(api_keys=["test-key"])
    r = httpx.post(f"{url}/chat/completions", headers={"Authorization": "Bearer test-key"},
                   json={"model": "kongming-rag", "messages": [{"role": "user", "content": "谁给刘备出了隆中对？"}]})
    assert r.status_code == 200 and r.headers["x-request-id"]
    assert r.json()["kongming"]["citations"]
    assert httpx.post(f"{url}/chat/completions", json={"model": "kongming", "messages": []}).status_code == 401


def test_upstream_down_is_a_503_not_a_hang(serve):
    import openai

    from tests.service.conftest import free_port

    url = serve(upstream_url=f"http://127.0.0.1:{free_port()}/v1", upstream_timeout=5)
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="kongming-persona-zhuge-liang",
                                       messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 503


def test_service_through_real_vllm(serve, vllm_server):
    """The persona route served by real vLLM (CPU build) through the service, streaming and not."""
    import openai

    from service.settings import ZHUGE_LIANG

    persona = ZHUGE_LIANG.model_copy(update={"served_model": vllm_server.model})
    url = serve(upstream_url=vllm_server.base_url, personas=[persona])
    client = openai.OpenAI(base_url=url, api_key="unused")
    kwargs = {"model": "kongming-persona-zhuge-liang", "messages": [{"role": "user", "content": "先生好"}],
              "max_tokens": 12, "temperature": 0, "seed": 1}
    done = client.chat.completions.create(**kwargs)
    assert done.usage.completion_tokens == 12 and done.usage.prompt_tokens > 0
    assert done.model_extra["kongming"]["route"]["route"] == "persona"
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == done.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 12
    routed = client.chat.completions.create(**{**kwargs, "model": "kongming",
                                               "messages": [{"role": "user", "content": "丞相，你好啊"}]})
    assert routed.model_extra["kongming"]["route"]["route"] == "persona"


@pytest.mark.parametrize("model", ["kongming", "kongming-rag", "kongming-persona-zhuge-liang"])
def test_naive_stream_loop_works_on_every_route(serve, model):
    """`chunk.choices[0].delta.content` on every chunk (the loop most people write); the finishing chunk carries
    the extension; include_usage adds exactly one chunk without choices, the last, and `usage: null` elsewhere."""
    import openai

    from tests.service.fakes import QueuedEngine

    engine = QueuedEngine("z", ["亮以为，谋事在人。"] * 4)
    client = openai.OpenAI(base_url=serve(engines={"zhuge-liang": engine}), api_key="unused")
    messages = [{"role": "user", "content": "孔明向鲁肃借了多少只船？"}]
    text = ""
    chunks = list(client.chat.completions.create(model=model, messages=messages, stream=True))
    for chunk in chunks:
        text += chunk.choices[0].delta.content or ""
    assert text and all(c.usage is None for c in chunks)
    assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"
    assert [bool(c.choices[0].finish_reason) for c in chunks].count(True) == 1
    assert chunks[-1].model_extra["kongming"]["route"]["route"] in ("rag", "persona", "both")
    assert all("kongming" not in (c.model_extra or {}) for c in chunks[:-1])

    with_usage = list(client.chat.completions.create(model=model, messages=messages, stream=True,
                                                     stream_options={"include_usage": True}))
    assert [c.choices == [] for c in with_usage].count(True) == 1 and with_usage[-1].choices == []
    usage = with_usage[-1].usage
    assert usage is not None and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    raw = [c.model_dump() for c in with_usage[:-1]]
    assert all("usage" in r and r["usage"] is None for r in raw)
    assert "".join(c.choices[0].delta.content or "" for c in with_usage[:-1]) == text
