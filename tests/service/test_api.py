"""The OpenAI-compatible API over a real app and knowledge base: routes, citations, streaming, errors, auth."""

from __future__ import annotations

import json
import re

import pytest

from tests.service.fakes import QueuedEngine

pytestmark = pytest.mark.integration


def chat(client, content, model="kongming", **extra):
    body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    return client.post("/v1/chat/completions", json=body)


def sse_events(text: str) -> list:
    out = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_models_lists_routed_rag_and_every_persona(make_client):
    ids = [m["id"] for m in make_client().get("/v1/models").json()["data"]]
    assert ids == ["kongming", "kongming-rag", "kongming-persona-zhuge-liang", "kongming-persona-zhen-huan"]


def test_rag_answer_cites_passages_with_chapter_and_snippet(make_client):
    r = chat(make_client(), "孔明向鲁肃借了多少只船？", model="kongming-rag")
    assert r.status_code == 200
    body = r.json()
    ext = body["kongming"]
    assert ext["route"] == {"route": "rag", "forced": True, "persona": None, "scores": {"rag": 1.0},
                            "reason": "rag: forced by the request"}
    answer = body["choices"][0]["message"]["content"]
    assert "二十只" in answer and "[1]" in answer
    # the text's markers are the citations' numbers, from 1 without gaps
    marks = sorted({int(n) for n in re.findall(r"\[(\d+)\]", answer)})
    assert marks == [c["index"] for c in ext["citations"]] == list(range(1, len(marks) + 1))
    cite = ext["citations"][0]
    assert cite["chapter"] == 3 and cite["chapter_title"] == "草船借箭 周瑜用计"
    assert "二十只" in cite["snippet"] or "鲁肃" in cite["snippet"]
    assert r.headers["x-kongming-route"] == "rag"
    assert json.loads(r.headers["x-kongming-citations"])[0]["chapter"] == 3
    assert body["usage"]["completion_tokens"] > 0
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]


def test_rag_says_so_when_nothing_relevant(make_client):
    body = chat(make_client(), "光合作用需要哪些条件？", model="kongming-rag").json()
    assert "没有找到" in body["choices"][0]["message"]["content"]
    assert body["kongming"]["citations"] == []


def test_streaming_sends_tokens_then_citations_in_a_last_chunk_before_done(make_client):
    r = chat(make_client(), "孔明向鲁肃借了多少只船？", model="kongming-rag", stream=True,
             stream_options={"include_usage": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    usage, last = events[-2], events[-3]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] > 0 and "kongming" not in usage
    assert last["choices"][0]["finish_reason"] == "stop" and last["kongming"]["route"]["route"] == "rag"
    assert last["kongming"]["citations"][0]["chapter"] == 3
    assert all(e["choices"] and e["usage"] is None for e in events[:-2])
    pieces = [e["choices"][0]["delta"].get("content", "") for e in events[:-2] if e["choices"]]
    assert len([p for p in pieces if p]) > 1  # really streamed in pieces
    non_stream = chat(make_client(), "孔明向鲁肃借了多少只船？", model="kongming-rag").json()
    assert "".join(pieces) == non_stream["choices"][0]["message"]["content"]
    assert [e["choices"][0]["finish_reason"] for e in events[:-2] if e["choices"]][-1] == "stop"


def test_persona_forced_uses_the_persona_engine_and_its_system_prompt(make_client):
    engine = QueuedEngine("zhuge", ["亮在此。"])
    client = make_client(engines={"zhuge-liang": engine})
    body = chat(client, "今天天气如何", model="kongming-persona-zhuge-liang").json()
    assert body["choices"][0]["message"]["content"] == "亮在此。"
    assert body["kongming"]["route"]["route"] == "persona" and body["kongming"]["route"]["persona"] == "zhuge-liang"
    prompt = engine.calls[0]
    assert prompt[0]["role"] == "system" and "诸葛亮" in prompt[0]["content"]
    assert prompt[-1] == {"role": "user", "content": "今天天气如何"}


def test_routed_model_explains_its_decision(make_client):
    client = make_client()
    cases = {"周瑜要孔明几天造好十万支箭？": "rag", "先生近来可好？": "persona",
             "孔明先生，当年草船借箭时您怎么算准会有大雾的？": "both"}
    for message, route in cases.items():
        info = chat(client, message).json()["kongming"]["route"]
        assert info["route"] == route, (message, info)
        assert not info["forced"]
        assert set(info["scores"]) == {"rag", "persona", "both"}
        assert info["reason"].startswith(route + ":") and len(info["reason"]) > len(route) + 5


def test_both_grounds_the_persona_on_numbered_passages(make_client):
    """A persona with grounded "generate" writes from the passages (the default answers with the extractive answer:
    tests/service/test_persona_decoding.py)."""
    from service.settings import ZHEN_HUAN, ZHUGE_LIANG

    engine = QueuedEngine("zhuge", ["亮借箭之时，早知三日后必有大雾[1]。"])
    persona = ZHUGE_LIANG.model_copy(update={"grounded": "generate"})
    client = make_client(engines={"zhuge-liang": engine}, personas=[persona, ZHEN_HUAN])
    body = chat(client, "先生，你草船借箭向鲁肃借了几只船？", kongming={"route": "both"}).json()
    assert body["kongming"]["route"]["route"] == "both"
    assert body["kongming"]["citations"] and body["kongming"]["citations"][0]["index"] == 1
    system, user = engine.calls[0][0]["content"], engine.calls[0][-1]["content"]
    assert "诸葛亮" in system and "[1]" in user and "鲁肃" in user


def test_chapter_filter_restricts_citations(make_client):
    body = chat(make_client(), "孔明", model="kongming-rag", kongming={"chapters": [2, 2]}).json()
    assert {c["chapter"] for c in body["kongming"]["citations"]} <= {2}


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}, 404, "model"),
        ({"model": "kongming", "messages": []}, 400, "messages"),
        ({"model": "kongming", "messages": [{"role": "robot", "content": "hi"}]}, 400, "messages.0.role"),
        ({"model": "kongming", "messages": [{"role": "assistant", "content": "hi"}]}, 400, "messages"),
        ({"model": "kongming", "messages": [{"role": "user", "content": "  "}]}, 400, "messages"),
        ({"model": "kongming", "messages": [{"role": "user", "content": "hi"}], "n": 2}, 400, "n"),
        ({"model": "kongming", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**6}, 400,
         "max_tokens"),
        ({"model": "kongming", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, 400,
         "temperature"),
        ({"model": "kongming", "messages": [{"role": "user", "content": "hi"}], "frobnicate": 1}, 400, "frobnicate"),
        ({"model": "kongming", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "10"}, 400,
         "max_tokens"),  # a string is no integer, as OpenAI answers it
        ({"model": "kongming", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, 400, "stream"),
        ({"model": "kongming", "messages": [{"role": "user", "content": "hi"}], "seed": 2**64}, 400,
         "seed"),  # past a 64-bit integer: the local engine's generator raised (a 500), vLLM refuses it
        ({"model": "kongming", "messages": "hi"}, 400, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}]}, 400, "model"),
    ],
)
def test_malformed_requests_get_openai_shaped_4xx(make_client, body, status, param):
    r = make_client().post("/v1/chat/completions", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == param and err["message"]


def test_invalid_json_and_oversized_bodies(make_client):
    client = make_client(max_request_bytes=4096)
    r = client.post("/v1/chat/completions", content=b'{"model": "kongming", "messages": [', headers={
        "content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = client.post("/v1/chat/completions", content=b"\xff\xfe{}", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    big = {"model": "kongming", "messages": [{"role": "user", "content": "字" * 5000}]}
    r = client.post("/v1/chat/completions", json=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()


def test_api_keys_when_configured(make_client):
    from service.settings import hash_key

    client = make_client(api_keys=["secret-1", "sha256:" + hash_key("secret-2")])
    assert chat(client, "你好").status_code == 401
    assert chat(client, "你好").json()["error"]["type"] == "authentication_error"
    assert client.post("/v1/chat/completions", headers={"authorization": "Bearer wrong"},
                       json={"model": "kongming", "messages": [{"role": "user", "content": "x"}]}).status_code == 401
    for key in ("secret-1", "secret-2"):
        r = client.get("/v1/models", headers={"authorization": f"Bearer {key}"})
        assert r.status_code == 200
    assert client.get("/health").status_code == 200  # health stays open


def test_kb_writes_need_a_key_and_reuse_ingest(make_client, tmp_path):
    open_client = make_client()
    r = open_client.post("/v1/kb/documents", files={"files": ("a.txt", "内容".encode(), "text/plain")})
    assert r.status_code == 401
    client = make_client(api_keys=["k"])
    auth = {"authorization": "Bearer k"}
    text = "第一回 测试\n\n曹丕字子桓，曹操之子也。子桓好文学，著《典论》。" * 3
    r = client.post("/v1/kb/documents", headers=auth, files={"files": ("caopi.txt", text.encode(), "text/plain")})
    assert r.status_code == 200 and r.json()["added"] == 1 and r.json()["warnings"] == [], r.text
    r = client.post("/v1/kb/documents", headers=auth, files={"files": ("copy.txt", text.encode(), "text/plain")})
    (note,) = r.json()["warnings"]  # the same text again under another name: kept, and said so
    assert note["file"] == "copy.txt" and "same text as caopi.txt" in note["message"] and "/" not in note["message"]
    docs = client.get("/v1/kb/documents", headers=auth).json()["data"]
    doc = next(d for d in docs if d["source"].endswith("caopi.txt"))
    r = client.post("/v1/kb/documents", headers=auth, files={"files": ("../evil.txt", b"x", "text/plain")})
    assert r.status_code == 400
    assert client.delete(f"/v1/kb/documents/{doc['id']}", headers=auth).json()["deleted"] is True
    assert client.delete("/v1/kb/documents/nope", headers=auth).status_code == 404


def test_metrics_count_requests_and_routes(make_client):
    client = make_client()
    chat(client, "孔明向鲁肃借了多少只船？", model="kongming-rag")
    text = client.get("/metrics").text
    assert 'kongming_router_decisions_total{forced="true",route="rag"} 1.0' in text
    assert "kongming_chat_latency_seconds_bucket" in text
    assert 'kongming_requests_total{method="POST",path="/v1/chat/completions",status="200"}' in text


def test_too_many_messages_is_a_400(make_client):
    client = make_client(max_messages=10)
    msgs = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "好"}] * 6
    r = client.post("/v1/chat/completions", json={"model": "kongming", "messages": [*msgs[:-1]]})
    assert r.status_code == 400 and "too many messages" in r.json()["error"]["message"]


def test_generative_rag_when_an_engine_is_configured(make_client):
    """With a RAG model configured, the engine writes the answer from numbered passages; citations are all the
    passages it was given."""
    writer = QueuedEngine("writer", ["孔明向鲁肃借船二十只[1]。"])
    client = make_client(engines={"rag": writer, "zhuge-liang": QueuedEngine("z")})
    body = chat(client, "孔明向鲁肃借了多少只船？", model="kongming-rag").json()
    assert body["choices"][0]["message"]["content"] == "孔明向鲁肃借船二十只[1]。"
    assert body["kongming"]["note"] is None
    prompt = writer.calls[0]
    assert prompt[0]["role"] == "system" and "[1]" in prompt[-1]["content"]
    assert [c["index"] for c in body["kongming"]["citations"]] == list(range(1, len(body["kongming"]["citations"]) + 1))
    # nothing relevant: the writer is not asked to invent an answer
    body = chat(client, "光合作用需要哪些条件？", model="kongming-rag").json()
    assert "没有找到" in body["choices"][0]["message"]["content"] and len(writer.calls) == 1


def test_kongming_serve_main_command(kb_settings, tmp_path):
    """`kongming serve` as a user starts it: a process on 127.0.0.1 answering chat completions."""
    import os
    import subprocess
    import sys
    import time

    import httpx

    from tests.service.conftest import free_port

    port = free_port()
    env = {**os.environ, "KONGMING_DATA_DIR": str(kb_settings.data_dir), "KONGMING_COLLECTION": "svc"}
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--no-ui"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.3)
        question = [{"role": "user", "content": "孔明向鲁肃借了多少只船？"}]
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=60,
                       json={"model": "kongming-rag", "messages": question})
        assert r.status_code == 200 and "二十只" in r.json()["choices"][0]["message"]["content"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_kb_write_with_the_store_down_is_a_503_naming_it(kb_settings, tmp_path):
    """A Chroma server that does not answer: an OpenAI-shaped 503 that names it, not a 500."""
    from fastapi.testclient import TestClient

    from service.app import build_chat_service, create_app
    from service.settings import get_service_settings
    from tests.service.conftest import free_port
    from tests.service.fakes import QueuedEngine

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    down = kb_settings.model_copy(update={"chroma_url": url, "data_dir": tmp_path / "kb"})
    settings = get_service_settings(data_dir=tmp_path / "svc", api_keys=["k"])
    chat_service = build_chat_service(settings, down, engines={p.name: QueuedEngine(p.name) for p in settings.personas})
    with TestClient(create_app(settings, chat=chat_service, ui=False)) as client:
        r = client.post("/v1/kb/documents", headers={"authorization": "Bearer k"},
                        files={"files": ("a.txt", "第一回 测试\n\n曹丕字子桓。".encode(), "text/plain")})
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    assert err["code"] == "knowledge_base_unavailable" and url.split("//")[1] in err["message"]


@pytest.mark.parametrize("model", ["kongming-rag", "kongming-persona-zhuge-liang", "kongming"])
def test_stream_without_include_usage_has_a_choice_in_every_chunk(make_client, model):
    events = sse_events(chat(make_client(), "孔明向鲁肃借了多少只船？", model=model, stream=True).text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(len(e["choices"]) == 1 and "usage" not in e for e in chunks)
    finishing = [e for e in chunks if e["choices"][0]["finish_reason"]]
    assert finishing == [chunks[-1]] and "route" in chunks[-1]["kongming"]
    assert all("kongming" not in e for e in chunks[:-1])
