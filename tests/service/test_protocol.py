"""The chat request validates itself: every field of OpenAI's current chat reference is accepted on every message role
and at the top level; what does not apply is ignored; only what cannot be honoured is refused, by name."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from service.protocol import ChatCompletionRequest
from tests.conftest import SHARED

pytestmark = pytest.mark.integration

QUESTION = {"role": "user", "content": "孔明向鲁肃借了多少只船？"}


def post(client, messages, **extra):
    return client.post("/v1/chat/completions", json={"model": "kongming-rag", "messages": messages, **extra})


def assistant_as_openai_returns_it(**fields) -> dict:
    """What `completion.choices[0].message.model_dump()` gives a client of the official library."""
    from openai.types.chat import ChatCompletion

    completion = ChatCompletion.model_validate({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "kongming",
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": "二十只船。", **fields}}],
    })  # fmt: skip
    return completion.choices[0].message.model_dump()


@pytest.mark.parametrize(
    "fields",
    [
        {},  # refusal, annotations, audio, function_call, tool_calls all null
        {"refusal": None, "tool_calls": [], "annotations": []},
        {"annotations": [{"type": "url_citation", "url_citation": {"url": "https://example.org", "title": "t",
                                                                    "start_index": 0, "end_index": 3}}]},
        {"audio": {"id": "audio_1", "data": "", "expires_at": 0, "transcript": "二十只船。"}},
        {"content": None, "refusal": "I can't help with that."},
    ],
)
def test_a_replayed_assistant_message_is_accepted(make_client, fields):
    replayed = assistant_as_openai_returns_it(**fields)
    assert set(replayed) >= {"refusal", "tool_calls", "function_call", "audio", "annotations"}
    r = post(make_client(), [QUESTION, replayed, {"role": "user", "content": "后来呢？"}])
    assert r.status_code == 200, r.text


def test_the_field_case_replay_is_accepted(make_client):
    case = SHARED.parent / "cases" / "field" / "api_replay_assistant_refusal_null.json"
    if not case.exists():
        pytest.skip(f"{case} is absent (the shared cases folder)")
    r = make_client().post("/v1/chat/completions", json=json.loads(case.read_text(encoding="utf-8")))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "history",
    [
        [{"role": "developer", "content": "回答要简短。", "name": "ops"}],
        [{"role": "system", "content": [{"type": "text", "text": "回答要简短。"}], "name": "sys"}],
        [QUESTION, {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "search", "arguments": "{}"}}]},
         {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "二十只"}]}],
        [{"role": "function", "name": "search", "content": None}],
        [{"role": "assistant", "content": [{"type": "text", "text": "二十"}, {"type": "refusal", "refusal": "不"}],
          "name": "kongming"}],
        [{"role": "user", "content": [{"type": "text", "text": "孔明", "cache_control": {"type": "ephemeral"}}],
          "name": "alice"}],
    ],
)
def test_every_message_role_of_the_reference_is_accepted(make_client, history):
    r = post(make_client(), [*history, QUESTION])
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "extra",
    [
        {"parallel_tool_calls": True}, {"reasoning_effort": "low"}, {"metadata": {"who": "test"}}, {"store": True},
        {"service_tier": "auto"}, {"user": "alice"}, {"logprobs": False}, {"top_logprobs": 0}, {"n": 1},
        {"tool_choice": "none"}, {"tool_choice": "auto"}, {"function_call": "none"}, {"modalities": ["text"]},
        {"stream_options": {"include_usage": True, "include_obfuscation": False}, "stream": True},
        {"prompt_cache_key": "k", "prompt_cache_retention": "24h", "safety_identifier": "h", "verbosity": "low"},
        {"prediction": {"type": "content", "content": "二十只"}}, {"presence_penalty": 0.5, "frequency_penalty": 0},
        {"response_format": {"type": "text"}}, {"tools": [], "functions": [], "logit_bias": {}, "audio": None},
    ],
)
def test_harmless_top_level_fields_are_accepted(make_client, extra):
    r = post(make_client(), [QUESTION], **extra)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("part", "words"),
    [
        ({"type": "image_url", "image_url": {"url": "https://example.org/a.png", "detail": "low"}}, "images are not"),
        ({"type": "image_url", "image_url": "x"}, "images are not supported"),
        ({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}, "audio input is not supported"),
        ({"type": "file", "file": {"file_id": "file-1"}}, "file content parts are not supported"),
    ],
)
def test_a_part_that_is_not_text_is_a_clear_400(make_client, part, words):
    message = {"role": "user", "content": [{"type": "text", "text": "这是谁？"}, part]}
    r = post(make_client(), [message])
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "messages.0.content" and err["message"].startswith(words), err
    assert "Input should be" not in err["message"]  # the part's own message, not the union's schema errors


@pytest.mark.parametrize(
    ("extra", "param", "words"),
    [
        ({"tool_choice": "required"}, "tool_choice", "forced tool call"),
        ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice", "forced tool call"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {}}}}, "response_format",
         "json_schema cannot be honoured"),
        ({"function_call": {"name": "f"}}, "function_call", "forced function call"),
        ({"logprobs": True}, "logprobs", "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs", "top_logprobs"),
        ({"logit_bias": {"1234": 5}}, "logit_bias", "logit_bias"),
        ({"audio": {"voice": "alloy", "format": "mp3"}}, "audio", "audio output"),
        ({"modalities": ["text", "audio"]}, "modalities", "text modality"),
        ({"web_search_options": {}}, "web_search_options", "web search"),
        ({"response_format": {"type": "xml"}}, "response_format", "response_format type must be"),
        ({"n": 3}, "n", "n > 1"),
    ],
)
def test_what_cannot_be_honoured_is_refused_by_name(make_client, extra, param, words):
    r = post(make_client(), [QUESTION], **extra)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and words in err["message"] and err["type"] == "invalid_request_error", err


def test_a_field_of_another_role_is_refused(make_client):
    r = post(make_client(), [{"role": "user", "content": "x", "tool_call_id": "call_1"}, QUESTION])
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages.0"
    assert "tool_call_id is not a field of a user message" in r.json()["error"]["message"]


def test_the_request_builds_its_conversation_and_sampling_params():
    req = ChatCompletionRequest.model_validate({
        "model": "kongming", "temperature": 0.2, "stop": "。", "seed": 7, "max_completion_tokens": 30,
        "messages": [{"role": "developer", "content": "简短"}, QUESTION,
                     {"role": "assistant", "content": None, "refusal": "不可"},
                     {"role": "tool", "tool_call_id": "c", "content": "ignored"}, {"role": "user", "content": "嗯"}],
    })  # fmt: skip
    assert req.conversation() == [{"role": "system", "content": "简短"}, QUESTION,
                                  {"role": "assistant", "content": "不可"},
                                  {"role": "tool", "content": "ignored", "tool_call_id": "c"},  # for a model server
                                  {"role": "user", "content": "嗯"}]
    params = req.to_sampling_params()
    assert (params.temperature, params.top_p, params.stop, params.seed) == (0.2, 1.0, ["。"], 7)
    assert req.max_new_tokens == 30
    req.check_limits(max_messages=5, max_tokens_cap=30)
    with pytest.raises(ValidationError) as caught:
        req.check_limits(max_messages=5, max_tokens_cap=29)
    assert caught.value.errors()[0]["loc"] == ("max_completion_tokens",)
    with pytest.raises(ValidationError, match="too many messages: 5 > 4"):
        req.check_limits(max_messages=4, max_tokens_cap=100)


def test_a_replayed_message_through_the_official_client(serve):
    """What a user of the `openai` library writes: append the returned message to the history and ask again."""
    import openai

    from tests.service.fakes import QueuedEngine

    client = openai.OpenAI(base_url=serve(engines={"zhuge-liang": QueuedEngine("z")}), api_key="unused")
    history = [QUESTION]
    first = client.chat.completions.create(model="kongming-rag", messages=history)
    history += [first.choices[0].message.model_dump(), {"role": "user", "content": "后来呢？"}]
    again = client.chat.completions.create(model="kongming-rag", messages=history)
    assert again.choices[0].message.content


@pytest.mark.parametrize("chapters", [[50, 40], [-1, 3]])
def test_a_chapter_range_that_is_no_range_is_refused(chapters):
    from pydantic import ValidationError

    from service.protocol import ChatCompletionRequest

    body = {"model": "kongming", "messages": [{"role": "user", "content": "赤壁"}], "kongming": {"chapters": chapters}}
    with pytest.raises(ValidationError, match="chapters must be"):
        ChatCompletionRequest.model_validate(body)
    body["kongming"]["chapters"] = [40, 50]
    assert ChatCompletionRequest.model_validate(body).kongming.chapters == (40, 50)
