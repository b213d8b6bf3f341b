"""The Responses API (POST /v1/responses, issue 11 item 17) driven by the official `openai` client over HTTP, against
the real service (uvicorn) on the small test knowledge base, with queued persona engines or the fake upstream."""

from __future__ import annotations

import json

import pytest

from tests.service.fakes import QueuedEngine

pytestmark = pytest.mark.integration

QUESTION = "孔明向鲁肃借了多少只船？"
ORDER = [
    "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
    "response.output_text.delta", "response.output_text.done", "response.content_part.done",
    "response.output_item.done", "response.completed",
]  # fmt: skip


@pytest.fixture
def client(serve):
    import openai

    def make(replies: list[str] | None = None, **overrides):
        engines = {"zhuge-liang": QueuedEngine("z", replies or [])}
        return openai.OpenAI(base_url=serve(engines=engines, **overrides), api_key="unused", max_retries=0)

    return make


def test_create_rag_answer_with_citations_as_annotations(client):
    c = client()
    r = c.responses.create(model="kongming-rag", input=QUESTION)
    assert r.id.startswith("resp_") and r.object == "response" and r.status == "completed"
    assert r.model == "kongming-rag" and r.created_at > 0 and r.incomplete_details is None
    assert "二十只" in r.output_text
    msg = r.output[0]
    assert msg.type == "message" and msg.role == "assistant" and msg.status == "completed"
    assert msg.id.startswith("msg_") and msg.content[0].type == "output_text"
    ext = r.model_extra["kongming"]
    assert ext["route"]["route"] == "rag" and ext["citations"][0]["chapter"] == 3
    notes = msg.content[0].annotations
    assert notes and all(a.type == "file_citation" for a in notes)
    first = next(x for x in ext["citations"] if f"[{x['index']}]" in r.output_text)
    note = notes[[x["index"] for x in ext["citations"]].index(first["index"])]
    assert note.file_id == first["doc_id"] and r.output_text[: note.index].endswith(f"[{first['index']}]")
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens and r.usage.output_tokens > 0
    # the same answer as chat completions gives
    chat = c.chat.completions.create(model="kongming-rag", messages=[{"role": "user", "content": QUESTION}])
    assert chat.choices[0].message.content == r.output_text


def test_message_items_instructions_and_persona(client):
    c = client(["亮以为，谋事在人，成事在天。"])
    r = c.responses.create(
        model="kongming-persona-zhuge-liang", instructions="答得简短。",
        input=[
            {"role": "developer", "content": "你是诸葛亮。"},
            {"role": "user", "content": [{"type": "input_text", "text": "先生"},
                                         {"type": "input_text", "text": "安好？"}]},
            {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
             "content": [{"type": "output_text", "text": "安好。", "annotations": []}]},
            {"role": "user", "content": "成事在谁？"},
        ],
        temperature=0.2, top_p=0.9, max_output_tokens=64, store=False, metadata={"k": "v"}, user="u1",
        parallel_tool_calls=False, reasoning={"effort": None}, truncation="disabled", text={"format": {"type": "text"}},
        tool_choice="none", tools=[],
    )  # fmt: skip
    assert r.output_text == "亮以为，谋事在人，成事在天。" and r.status == "completed"
    assert r.model_extra["kongming"]["route"]["route"] == "persona"
    assert r.metadata == {"k": "v"} and r.temperature == 0.2 and r.max_output_tokens == 64


def test_stream_events_in_order_with_sequence_numbers(client):
    c = client(["亮以为，谋事在人，成事在天。"])
    with c.responses.stream(model="kongming-persona-zhuge-liang", input="先生安好？") as s:
        events = list(s)
        final = s.get_final_response()
    kinds = [e.type for e in events]
    squeezed = [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1]]
    assert squeezed == ORDER and kinds.count("response.output_text.delta") > 1
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text == "亮以为，谋事在人，成事在天。"
    assert final.status == "completed" and final.id.startswith("resp_") and final.usage.output_tokens > 0
    assert events[0].response.id == final.id and final.model_extra["kongming"]["route"]["route"] == "persona"


def test_create_with_stream_true_on_rag_matches_the_plain_answer(client):
    c = client()
    events = list(c.responses.create(model="kongming-rag", input=QUESTION, stream=True))
    assert events[-1].type == "response.completed"
    final = events[-1].response
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == final.output_text == c.responses.create(model="kongming-rag", input=QUESTION).output_text
    assert final.output[0].content[0].annotations and final.model_extra["kongming"]["citations"]


def test_sources_appended_when_asked_streamed_and_not(client):
    c = client()
    plain = c.responses.create(model="kongming-rag", input=QUESTION).output_text
    assert "来源：" not in plain
    asked = c.responses.create(model="kongming-rag", input=QUESTION, extra_body={"kongming": {"sources": "append"}})
    assert asked.output_text.startswith(plain + "\n\n来源：\n[1] 《")
    with c.responses.stream(model="kongming-rag", input=QUESTION,
                            extra_headers={"x-kongming-sources": "append"}) as s:
        assert s.get_final_response().output_text == asked.output_text


def test_max_output_tokens_cut_is_incomplete(serve, fake_upstream):
    import openai

    from service.settings import ZHUGE_LIANG

    persona = ZHUGE_LIANG.model_copy(update={"served_model": "echo"})
    url = serve(upstream_url=fake_upstream.base_url, personas=[persona])
    c = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
    r = c.responses.create(model="kongming-persona-zhuge-liang", input="一二三四五六七八九十", max_output_tokens=4)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.output[0].status == "incomplete" and r.output_text == "回声：一"
    assert fake_upstream.state.requests[-1]["max_tokens"] == 4
    events = list(c.responses.create(model="kongming-persona-zhuge-liang", input="一二三四五六", max_output_tokens=4,
                                     stream=True))
    assert events[-1].type == "response.incomplete" and events[-1].response.incomplete_details.reason == (
        "max_output_tokens")
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "回声：一"


def test_a_cut_at_the_routes_own_default_length_is_completed(serve, fake_upstream):
    """No max_output_tokens asked: the persona's default length ends the answer, and the response completes
    (the SDK's get_final_response() needs response.completed)."""
    import openai

    from service.settings import ZHUGE_LIANG

    persona = ZHUGE_LIANG.model_copy(update={"served_model": "echo", "max_tokens": 4})
    url = serve(upstream_url=fake_upstream.base_url, personas=[persona])
    c = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
    r = c.responses.create(model="kongming-persona-zhuge-liang", input="一二三四五六七八九十")
    assert r.status == "completed" and r.incomplete_details is None and r.output_text == "回声：一"
    assert fake_upstream.state.requests[-1]["max_tokens"] == 4
    with c.responses.stream(model="kongming-persona-zhuge-liang", input="一二三四五六") as s:
        final = s.get_final_response()
    assert final.status == "completed" and final.output_text == "回声：一"


@pytest.mark.parametrize(("extra", "param"), [
    ({"tools": [{"type": "function", "name": "f", "parameters": {}}]}, "tools"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"background": True}, "background"),
    ({"text": {"format": {"type": "json_object"}}}, "text"),
    ({"frobnicate": 1}, "frobnicate"),
    ({"max_output_tokens": 10**6}, "max_output_tokens"),
])  # fmt: skip
def test_what_cannot_be_honoured_is_a_400_naming_the_field(client, extra, param):
    import openai

    with pytest.raises(openai.BadRequestError) as err:
        client().responses.create(model="kongming", input="hi", extra_body=extra)
    assert err.value.body["param"] == param and err.value.body["type"] == "invalid_request_error"
    assert param in err.value.body["message"] or err.value.body["message"]


@pytest.mark.parametrize(("input_", "words"), [
    ([{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y.png"}]}], "images"),
    ([{"role": "assistant", "content": "hi"}], "last input item must be a user message"),
    ([], "at least one"),
    ("  ", "empty"),
    ([{"type": "function_call_output", "call_id": "c", "output": "x"}], ""),
])  # fmt: skip
def test_bad_input_is_a_clear_400(client, input_, words):
    import openai

    with pytest.raises(openai.BadRequestError) as err:
        client().responses.create(model="kongming", input=input_)
    assert words in err.value.body["message"] and err.value.body["param"].startswith("input")


def test_unknown_model_is_a_404_and_raw_events_are_sse(client, serve):
    import httpx
    import openai

    c = client()
    with pytest.raises(openai.NotFoundError) as err:
        c.responses.create(model="gpt-x", input="hi")
    assert err.value.body["code"] == "model_not_found"
    url = str(c.base_url).rstrip("/")
    r = httpx.post(f"{url}/responses", json={"model": "kongming-rag", "input": QUESTION, "stream": True})
    blocks = [b for b in r.text.split("\n\n") if b]
    assert all(b.startswith("event: ") and "\ndata: " in b for b in blocks)
    assert json.loads(blocks[-1].split("\ndata: ", 1)[1])["type"] == "response.completed"
    assert r.headers["x-kongming-route"] == "rag"
