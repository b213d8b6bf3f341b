"""Tools and structured output (issue 11 item 14): offline, tool_choice auto/none is answered with text, a forced
call or a JSON schema is a 400 that says so, json_object gets {answer, citations}; with a model server, tools and
formats pass through and its tool calls come back in OpenAI's shape, whole or streamed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tests.service.conftest import ServerThread
from tests.service.fakes import QueuedEngine

pytestmark = pytest.mark.integration

FACT = "孔明向鲁肃借了多少只船？"
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "天气",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "成都"}'}}


def chat(client: Any, model: str, content: str = FACT, **extra: Any) -> Any:
    return client.post("/v1/chat/completions",
                       json={"model": model, "messages": [{"role": "user", "content": content}], **extra})


def stream_text(client: Any, model: str, **extra: Any) -> tuple[str, list[dict]]:
    r = chat(client, model, stream=True, **extra)
    assert r.status_code == 200, r.text
    events = [json.loads(b[6:]) for b in r.text.split("\n\n") if b.startswith("data: {")]
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events), events


MODELS = ["kongming-rag", "kongming-persona-zhuge-liang", "kongming"]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("choice", ["auto", "none", None])
def test_tools_with_auto_or_none_are_answered_with_text(make_client, model, choice) -> None:
    client = make_client(engines={"zhuge-liang": QueuedEngine("z", ["亮在此。"] * 2)})
    extra: dict[str, Any] = {"tools": [TOOL], "parallel_tool_calls": True}
    if choice:
        extra["tool_choice"] = choice
    body = chat(client, model, **extra).json()
    message = body["choices"][0]["message"]
    assert message["content"] and message.get("tool_calls") is None, body
    assert body["choices"][0]["finish_reason"] == "stop"
    assert stream_text(client, model, **extra)[0] == message["content"]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_a_forced_tool_call_offline_is_a_400_that_says_so(make_client, model, choice) -> None:
    r = chat(make_client(), model, tools=[TOOL], tool_choice=choice)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "tool_choice" and "calls no tools" in err["message"]
    assert "KONGMING_UPSTREAM_URL" in err["message"]


@pytest.mark.parametrize("model", MODELS)
def test_a_json_schema_offline_is_a_400_that_says_so(make_client, model) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "Answer", "schema": {"type": "object"}}}
    r = chat(make_client(), model, response_format=fmt)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "response_format" and "json_schema cannot be honoured" in err["message"]


@pytest.mark.parametrize(("model", "reply"), [("kongming-rag", None), ("kongming-persona-zhuge-liang", "亮在此。"),
                                              ("kongming-persona-zhuge-liang", '他说："引号"\n和\\反斜杠')])
def test_json_object_gets_the_answer_and_citations(make_client, model, reply) -> None:
    client = make_client(engines={"zhuge-liang": QueuedEngine("z", [reply or ""] * 3)})
    plain = chat(client, model).json()
    body = chat(client, model, response_format={"type": "json_object"}).json()
    obj = json.loads(body["choices"][0]["message"]["content"])
    assert obj == {"answer": plain["choices"][0]["message"]["content"], "citations": body["kongming"]["citations"]}
    if reply:
        assert obj["answer"] == reply
    else:
        assert "二十" in obj["answer"] and obj["citations"] and obj["citations"][0]["chapter"] == 3
    text, events = stream_text(client, model, response_format={"type": "json_object"})
    assert json.loads(text) == obj
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


# -- with a model server ---------------------------------------------------------------------------------------


def tool_upstream(seen: list[dict[str, Any]]) -> FastAPI:
    """An OpenAI-compatible server that calls the first tool it is given (whole, or streamed in two pieces)."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def completions(request: Request) -> Any:
        body = await request.json()
        seen.append(body)
        usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        if not body.get("stream"):
            message = {"role": "assistant", "content": None, "tool_calls": [CALL]} if body.get("tools") else \
                {"role": "assistant", "content": '{"answer": "ok"}'}
            finish = "tool_calls" if body.get("tools") else "stop"
            return JSONResponse({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                 "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                                 "usage": usage})

        def events() -> Iterator[str]:
            def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
                choice = {"index": 0, "delta": delta, "finish_reason": finish}
                return "data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", "created": 0,
                                              "model": body["model"], "choices": [choice]}) + "\n\n"

            yield chunk({"role": "assistant", "content": None})
            yield chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                         "function": {"name": "get_weather", "arguments": ""}}]})
            yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "成都"}'}}]})
            yield chunk({}, "tool_calls")
            yield "data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", "created": 0,
                                         "model": body["model"], "choices": [], "usage": usage}) + "\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@pytest.fixture
def tool_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    server = ServerThread(tool_upstream(seen)).start()
    yield server.url + "/v1", seen
    server.stop()


def test_upstream_gets_tools_and_its_tool_calls_come_back(serve, tool_server) -> None:
    import openai

    upstream, seen = tool_server
    client = openai.OpenAI(base_url=serve(upstream_url=upstream), api_key="unused")
    messages = [{"role": "user", "content": "成都天气如何？"}]
    kw: dict[str, Any] = {"model": "kongming-persona-zhuge-liang", "messages": messages, "tools": [TOOL],
                          "tool_choice": "required", "parallel_tool_calls": False}
    done = client.chat.completions.create(**kw)
    assert seen[-1]["tools"] == [TOOL] and seen[-1]["tool_choice"] == "required"
    assert seen[-1]["parallel_tool_calls"] is False
    choice = done.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls[0].function.name == "get_weather"
    assert json.loads(choice.message.tool_calls[0].function.arguments) == {"city": "成都"}
    assert done.usage.prompt_tokens == 11 and done.usage.completion_tokens == 7

    chunks = list(client.chat.completions.create(**kw, stream=True))
    pieces = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert pieces[0].id == "call_1" and pieces[0].function.name == "get_weather"
    assert "".join(p.function.arguments or "" for p in pieces) == '{"city": "成都"}'
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    fmt = {"type": "json_schema", "json_schema": {"name": "A", "schema": {"type": "object"}}}
    done = client.chat.completions.create(model="kongming-persona-zhuge-liang", messages=messages,
                                          response_format=fmt)  # type: ignore[arg-type]
    assert seen[-1]["response_format"] == fmt and "tools" not in seen[-1]
    assert json.loads(done.choices[0].message.content or "") == {"answer": "ok"}


def test_an_agents_tool_loop_reaches_the_model_server(serve, tool_server) -> None:
    """The second turn of an agent: its history holds the assistant's tool call and the tool's result after the
    user's question. The model server reads both, in OpenAI's shape (LangChain, pydantic-ai and openai-agents
    loops depend on it)."""
    import openai

    upstream, seen = tool_server
    client = openai.OpenAI(base_url=serve(upstream_url=upstream), api_key="unused")
    question = {"role": "user", "content": "成都天气如何？"}
    first = client.chat.completions.create(model="kongming-persona-zhuge-liang", messages=[question], tools=[TOOL])
    call = first.choices[0].message
    result = {"role": "tool", "tool_call_id": call.tool_calls[0].id, "content": "晴，二十五度"}
    client.chat.completions.create(model="kongming-persona-zhuge-liang", tools=[TOOL],
                                   messages=[question, call.model_dump(exclude_none=True), result])  # type: ignore[list-item]
    sent = seen[-1]["messages"]
    assert sent[0]["role"] == "system" and sent[1] == question
    assert sent[2]["role"] == "assistant" and sent[2]["tool_calls"][0]["id"] == call.tool_calls[0].id
    assert sent[3] == result


def test_a_tool_loop_offline_is_answered_from_the_question(make_client) -> None:
    """Without a model server the tool results cannot be read by a model: the answer is the knowledge base's
    to the last user question; tool results with no user question are a 400."""
    client = make_client()
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    messages = [{"role": "user", "content": FACT}, {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "晴"}]
    r = client.post("/v1/chat/completions", json={"model": "kongming-rag", "messages": messages, "tools": [TOOL]})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"], r.text
    r = client.post("/v1/chat/completions", json={"model": "kongming-rag", "messages": messages[1:]})
    assert r.status_code == 400 and "user message" in r.json()["error"]["message"], r.text
