"""Bad HTTP input gets an OpenAI-shaped 4xx, never a 500: malformed and odd bodies, limits, unknown names, a prompt
over the context window, and a schemathesis fuzz of the API from its own OpenAPI schema.

(test_api.py covers the basic cases: bad JSON, wrong role, empty messages, n > 1, max_tokens over the cap, unknown
model and field, a body over the limit, too many messages.)"""

from __future__ import annotations

import time

import pytest

from service.settings import PersonaConfig

pytestmark = pytest.mark.integration

USER = [{"role": "user", "content": "孔明向鲁肃借了多少只船？"}]


def assert_openai_error(r, status: int, param: str | None = "-", code: str | None = "-") -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"] and err["type"]
    if param != "-":
        assert err["param"] == param, err
    if code != "-":
        assert err["code"] == code, err
    return err


def post_raw(client, content: bytes, content_type: str = "application/json"):
    return client.post("/v1/chat/completions", content=content, headers={"content-type": content_type})


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b'{"model": "kongming", "messages": [{"role": "user", "content": "hi"}],}',  # trailing comma
        b"[]",
        b"null",
        b'"kongming"',
        b"12",
        b'{"model": "kongming"} {"model": "kongming"}',  # two documents
        b"\x00\x01\x02",
        b'{"model": "kongming", "messages": [{"role": "user", "content": "hi"}]}' + b" " * 10 + b"x",
        b"[" * 5000 + b"]" * 5000,  # deep nesting
    ],
)
def test_malformed_json_is_400(make_client, content):
    assert_openai_error(post_raw(make_client(), content), 400)


def test_stream_options_without_streaming_is_400_as_openai_answers_it(make_client):
    body = {"model": "kongming-rag", "messages": [{"role": "user", "content": "hi"}],
            "stream_options": {"include_usage": True}}  # fmt: skip
    err = assert_openai_error(make_client().post("/v1/chat/completions", json=body), 400, param="stream_options")
    assert "only allowed when 'stream' is enabled" in err["message"]


def test_non_json_content_type_is_400(make_client):
    assert_openai_error(post_raw(make_client(), b"model=kongming", "application/x-www-form-urlencoded"), 400)
    assert_openai_error(post_raw(make_client(), b"hello", "text/plain"), 400)


def test_invalid_utf8_inside_a_json_string_is_400(make_client):
    body = b'{"model": "kongming", "messages": [{"role": "user", "content": "\xe5\xad\x94\xff\xfe"}]}'
    err = assert_openai_error(post_raw(make_client(), body), 400)
    assert err["type"] == "invalid_request_error"
    # a lone surrogate escape is valid JSON but not a valid string to hand a model
    r = post_raw(make_client(), b'{"model": "kongming-rag", "messages": [{"role": "user", "content": "\\ud800"}]}')
    err = assert_openai_error(r, 400)
    assert err["param"] == "messages.0.content" and err["message"].startswith("messages.0.content is not valid Unicode")


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"messages": [{"role": "user", "content": 42}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]}, "messages.0.content"),
        ({"messages": ["hi"]}, "messages.0"),
        ({"messages": [{"content": "hi"}]}, "messages.0.role"),
        ({"model": 7}, "model"),
        ({"model": None}, "model"),
        ({"stream": "yes please"}, "stream"),
        ({"max_tokens": "many"}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"top_p": 0}, "top_p"),
        ({"temperature": -1}, "temperature"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": 5}, "stop"),
        ({"kongming": {"k": 0}}, "kongming.k"),
        ({"kongming": {"chapters": [1]}}, "kongming.chapters"),
        ({"kongming": {"route": "sing"}}, "kongming.route"),
        ({"stream_options": {"include_usage": "maybe"}}, "stream_options.include_usage"),
    ],
)
def test_wrong_types_are_400_naming_the_field(make_client, extra, param):
    body = {"model": "kongming", "messages": USER, **extra}
    err = assert_openai_error(make_client().post("/v1/chat/completions", json=body), 400)
    assert err["param"] is not None and err["param"].startswith(param), err


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi", "mood": "sad"}]}, "messages.0.mood"),
        ({"kongming": {"route": "rag", "temperature": 1}}, "kongming.temperature"),
        ({"stream_options": {"include_usage": True, "x": 1}}, "stream_options.x"),
    ],
)
def test_unknown_nested_fields_are_400(make_client, extra, param):
    body = {"model": "kongming", "messages": USER, **extra}
    err = assert_openai_error(make_client().post("/v1/chat/completions", json=body), 400, param=param)
    assert "Unrecognized request argument" in err["message"]


@pytest.mark.parametrize(
    "extra",
    [{"max_tokens": 0}, {"max_tokens": -5}, {"max_completion_tokens": 10**9}, {"max_tokens": 2**80},
     {"max_completion_tokens": 2049}],
)
def test_huge_or_nonpositive_max_tokens_is_400(make_client, extra):
    body = {"model": "kongming", "messages": USER, **extra}
    err = assert_openai_error(make_client().post("/v1/chat/completions", json=body), 400)
    assert err["param"] in ("max_tokens", "max_completion_tokens")


def test_conversation_without_a_user_turn_is_400(make_client):
    client = make_client()
    for messages in ([{"role": "system", "content": "你是诸葛亮"}], [{"role": "user", "content": ""}],
                     [*USER, {"role": "assistant", "content": "二十只"}]):
        assert_openai_error(client.post("/v1/chat/completions", json={"model": "kongming", "messages": messages}),
                            400, param="messages")


def test_10000_message_conversation_is_refused_quickly(make_client):
    client = make_client(max_request_bytes=4_000_000)
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": "你好"} for i in range(10_000)]
    messages[-1] = {"role": "user", "content": "孔明向鲁肃借了多少只船？"}
    started = time.perf_counter()
    err = assert_openai_error(client.post("/v1/chat/completions", json={"model": "kongming", "messages": messages}),
                              400, param="messages")
    assert "too many messages" in err["message"] and time.perf_counter() - started < 2.0


def test_long_histories_do_not_slow_the_router(make_client):
    """Allowed to 20,000 messages, a 10,000-message conversation is still answered quickly: the router reads the
    last two user turns only, and retrieval the last one."""
    client = make_client(max_request_bytes=4_000_000, max_messages=20_000)
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": "你好" * 10} for i in range(10_000)]
    messages[-1] = {"role": "user", "content": "孔明向鲁肃借了多少只船？"}
    client.post("/v1/chat/completions", json={"model": "kongming", "messages": USER})  # warm the router
    started = time.perf_counter()
    r = client.post("/v1/chat/completions", json={"model": "kongming", "messages": messages})
    assert r.status_code == 200, r.text
    assert r.json()["kongming"]["route"]["route"] in ("rag", "persona", "both")
    assert time.perf_counter() - started < 5.0


def test_chunked_body_over_the_limit_is_413(make_client):
    """No Content-Length to refuse up front: the limit is counted as the body arrives."""
    client = make_client(max_request_bytes=4096)

    def body():
        yield b'{"model": "kongming", "messages": [{"role": "user", "content": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}]}'

    r = client.post("/v1/chat/completions", content=body(), headers={"content-type": "application/json"})
    assert_openai_error(r, 413, code="request_too_large")


def test_uploads_have_their_own_body_limit(make_client):
    client = make_client(max_request_bytes=4096, max_upload_bytes=16_384, api_keys=["k"])
    small = {"files": ("a.txt", b"x" * 8000, "text/plain")}  # over the chat limit, under the upload limit
    assert client.post("/v1/kb/documents", files=small).status_code == 401  # got past the body limit
    big = {"files": ("a.txt", b"x" * 20_000, "text/plain")}
    assert_openai_error(client.post("/v1/kb/documents", files=big, headers={"authorization": "Bearer k"}), 413)
    r = client.post("/v1/chat/completions", json={"model": "kongming", "messages": [{"role": "user",
                                                                                      "content": "x" * 8000}]})
    assert_openai_error(r, 413)


def test_the_pages_uploads_take_the_files_limit_not_the_chats(kb_settings, tmp_path):
    """A document uploaded through the page (the whole novel is 1.8 MB) is not refused by the chat's body limit;
    the Files API's limit still holds there."""
    from fastapi.testclient import TestClient

    from service.app import build_chat_service, create_app
    from service.settings import get_service_settings

    settings = get_service_settings(data_dir=tmp_path / "svc", max_request_bytes=4096, max_file_bytes=16_384)
    with TestClient(create_app(settings, chat=build_chat_service(settings, kb_settings), ui=True)) as client:
        small = {"files": ("novel.txt", "三国".encode() * 2000, "text/plain")}  # 12 kB: over the chat limit
        r = client.post("/ui/gradio_api/upload", files=small)
        assert r.status_code == 200, r.text
        big = {"files": ("novel.txt", b"x" * 1_100_000, "text/plain")}  # over max_file_bytes + the framing
        assert_openai_error(client.post("/ui/gradio_api/upload", files=big), 413)
        home = client.get("/", follow_redirects=False)  # the address a person types opens the page
        assert home.status_code == 307 and home.headers["location"] == "/ui/"
        assert client.get("/").status_code == 200


def test_unknown_model_persona_and_document(make_client):
    client = make_client()
    err = assert_openai_error(client.post("/v1/chat/completions", json={"model": "kongming-persona-cao-cao",
                                                                         "messages": USER}), 404, param="model")
    assert "kongming-persona-zhuge-liang" in err["message"]  # says what exists
    assert_openai_error(client.get("/v1/models/gpt-4"), 404, param="model")
    body = {"model": "kongming", "messages": USER, "kongming": {"persona": "cao-cao"}}
    assert_openai_error(client.post("/v1/chat/completions", json=body), 400, param="kongming.persona")
    assert_openai_error(client.get("/v1/no/such/route"), 404)
    assert_openai_error(client.put("/v1/chat/completions", json={}), 405)


@pytest.mark.parametrize("stream", [False, True])
def test_prompt_longer_than_the_context_window_is_400(make_client, fake_upstream, stream):
    """The model server (an OpenAI-compatible server answering like vLLM) refuses the prompt as too long: the
    client gets OpenAI's 400 context_length_exceeded, streamed or not."""
    persona = PersonaConfig(name="tiny", display_name="小", system_prompt="你是小。", served_model="context")
    client = make_client(engines={}, upstream_url=fake_upstream.base_url, personas=[persona], default_persona="tiny")
    body = {"model": "kongming-persona-tiny", "messages": [{"role": "user", "content": "字" * 3000}],
            "stream": stream}
    err = assert_openai_error(client.post("/v1/chat/completions", json=body), 400, param="messages",
                              code="context_length_exceeded")
    assert "maximum context length" in err["message"]


# -- fuzz ---------------------------------------------------------------------------------------------------------

FUZZ_EXAMPLES = 50  # per operation and mode: the whole fuzz takes ~15 s here


def test_fuzz_api_from_its_openapi_schema(make_client):
    """Schemathesis generates requests from the app's own OpenAPI schema, valid and invalid; every response
    must be a non-5xx with a documented status, content type and body shape (OpenAI's error object for errors).
    Chat is open, knowledge-base writes need a key the fuzz does not have (so it cannot fill the store)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        negative_data_rejection,
        response_schema_conformance,
        status_code_conformance,
    )

    client = make_client(api_keys=["fuzz-only-key"], chat_auth="open")
    app = client.app
    # the first routed request loads the router (seconds on a busy machine): not what the fuzz measures
    assert client.post("/v1/chat/completions", json={"model": "kongming", "messages": USER}).status_code == 200
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
              negative_data_rejection]
    seen: dict[str, int] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/models", "/v1/kb/documents", "/health"}
    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=_with_known_models(operation.as_strategy(generation_mode=mode), mode))
            def run(case) -> None:
                response = case.call_and_validate(checks=checks)
                seen[f"{case.method} {case.path} {response.status_code}"] = 1

            try:
                run()
            except Unsatisfiable:  # an operation with no inputs has no invalid requests to make
                assert mode == schemathesis.GenerationMode.NEGATIVE
    assert {"POST /v1/chat/completions 200", "POST /v1/chat/completions 400", "POST /v1/chat/completions 404",
            "DELETE /v1/kb/documents/{doc_id} 401"} <= set(seen), sorted(seen)


def _with_known_models(strategy, mode):
    """Random model names are all unknown (404) and random options nearly always hold one the service refuses (n > 1,
    tools...): the valid chat bodies drop those options and end the (random) history with a question, and half of
    them name a served model, so the fuzz reaches the router, retrieval and the engines (and the 404 of the others)."""
    from hypothesis import strategies as st

    from service.protocol import CANNOT

    models = st.sampled_from([None, "kongming", "kongming-rag", "kongming-persona-zhuge-liang", None])
    refused = (*CANNOT, "max_tokens", "max_completion_tokens", "kongming")

    def pick(pair):
        case, (model, question) = pair
        body = case.body
        if mode.is_positive and isinstance(body, dict) and isinstance(body.get("messages"), list):
            body["model"] = model or body.get("model")
            for name in refused:
                body.pop(name, None)
            body["messages"] = [*body["messages"][-20:], {"role": "user", "content": question}]
        return case

    questions = st.text(min_size=1, max_size=40).filter(str.strip) | st.sampled_from(["孔明向鲁肃借了多少只船？"])
    return st.tuples(strategy, st.tuples(models, questions)).map(pick)
