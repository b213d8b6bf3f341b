"""/v1/files through the real app: upload checks (bad lines by number, no valid record, size), list, get, content,
delete, unknown ids, keys; and the official `openai` client's Files calls unchanged."""

from __future__ import annotations

import json

import pytest

KEY = {"Authorization": "Bearer k"}


def jsonl(*records: object) -> bytes:
    return ("\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records) + "\n").encode()


GOOD = {"messages": [{"role": "user", "content": "好吃吗"}, {"role": "assistant", "content": "好评"}]}


@pytest.fixture
def client(make_client):
    return make_client(api_keys=["k"], finetune_worker=False, max_file_bytes=4096)


def upload(client, data: bytes, name: str = "train.jsonl", purpose: str = "fine-tune"):
    return client.post("/v1/files", headers=KEY, files={"file": (name, data)}, data={"purpose": purpose})


def test_upload_reports_every_bad_line_with_its_number(client):
    data = jsonl(GOOD, "{oops", {"messages": [{"role": "user", "content": "x"}]}, GOOD, {"prompt": "p"})
    r = upload(client, data)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "file" and body["purpose"] == "fine-tune" and body["status"] == "processed"
    assert body["bytes"] == len(data) and body["filename"] == "train.jsonl" and body["id"].startswith("file-")
    ext = body["kongming"]
    assert (ext["format"], ext["records"], ext["skipped"]) == ("openai", 2, 3)
    assert [p["line"] for p in ext["problems"]] == [2, 3, 5]
    assert all(p["message"] for p in ext["problems"])
    assert "line 2" in body["status_details"] and "line 5" in body["status_details"]
    assert client.get(f"/v1/files/{body['id']}", headers=KEY).json() == body
    assert client.get(f"/v1/files/{body['id']}/content", headers=KEY).content == data


def test_no_valid_record_is_a_400_in_openai_shape(client):
    r = upload(client, jsonl({"messages": [{"role": "assistant", "content": "x"}]}, "[1, 2"))
    assert r.status_code == 400
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
    assert "line 1" in err["message"] and "line 2" in err["message"] and err["param"] == "file"
    assert "/" not in err["message"].replace("line 1", "")  # no server folder
    assert client.get("/v1/files", headers=KEY).json()["data"] == []


@pytest.mark.parametrize(("name", "purpose"), [("train.jsonl", "fine-tune"), ("notes.txt", "assistants")])
def test_an_empty_file_is_a_400_that_names_it_once(client, name, purpose):
    err = upload(client, b"", name, purpose).json()["error"]
    assert err["message"] == f"{name}: empty file" and err["code"] == "invalid_file"


def test_size_limit_purpose_and_key(client):
    r = upload(client, jsonl(*[GOOD] * 60))
    assert r.status_code == 413 and "max_file_bytes" in r.json()["error"]["message"]
    r = upload(client, jsonl(GOOD), purpose="batch")  # "assistants" takes documents (vector stores)
    assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"
    assert r.json()["error"]["type"] == "invalid_request_error" and r.json()["error"]["code"] != "invalid_file"
    assert client.post("/v1/files", files={"file": ("a.jsonl", jsonl(GOOD))}, data={"purpose": "fine-tune"}
                       ).status_code == 401  # fmt: skip


def test_list_pages_and_delete(client):
    ids = [upload(client, jsonl(GOOD), f"f{i}.jsonl").json()["id"] for i in range(3)]
    page = client.get("/v1/files", headers=KEY, params={"limit": 2}).json()
    assert page["object"] == "list" and [f["id"] for f in page["data"]] == ids[::-1][:2] and page["has_more"]
    rest = client.get("/v1/files", headers=KEY, params={"limit": 2, "after": page["last_id"]}).json()
    assert [f["id"] for f in rest["data"]] == [ids[0]] and not rest["has_more"]
    gone = client.delete(f"/v1/files/{ids[0]}", headers=KEY).json()
    assert gone == {"id": ids[0], "object": "file", "deleted": True}
    for method, path in [("get", ids[0]), ("get", f"{ids[0]}/content"), ("delete", ids[0])]:
        r = client.request(method.upper(), f"/v1/files/{path}", headers=KEY)
        assert r.status_code == 404 and r.json()["error"]["code"] == "file_not_found"


def test_openai_client_files_calls(serve, tmp_path):
    import openai

    url = serve(api_keys=["k"], finetune_worker=False)
    client = openai.OpenAI(base_url=url, api_key="k", max_retries=0)
    path = tmp_path / "reviews.jsonl"
    path.write_bytes(jsonl(GOOD, "{bad"))
    created = client.files.create(file=path.open("rb"), purpose="fine-tune")
    assert created.status == "processed" and created.model_extra["kongming"]["problems"][0]["line"] == 2
    assert client.files.retrieve(created.id).filename == "reviews.jsonl"
    assert [f.id for f in client.files.list()] == [created.id]
    assert client.files.content(created.id).read() == path.read_bytes()
    assert client.files.delete(created.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)
    path.write_bytes(b'{"a": 1}\n')
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=path.open("rb"), purpose="fine-tune")


def test_files_have_their_own_body_limit_and_kb_uploads_keep_theirs(make_client):
    client = make_client(api_keys=["k"], finetune_worker=False, max_request_bytes=4096, max_upload_bytes=16_384,
                         max_file_bytes=100_000)  # fmt: skip
    data = jsonl(*[GOOD] * 100)  # ~9 kB: over the chat limit, under the files limit
    assert len(data) > 4096 and upload(client, data).status_code == 200
    big = {"files": ("a.txt", b"x" * 20_000, "text/plain")}
    assert client.post("/v1/kb/documents", files=big, headers=KEY).status_code == 413


def test_a_long_name_keeps_its_extension_and_a_text_file_for_fine_tune_gets_no_cli_hint(client):
    r = upload(client, "赤壁之战，黄盖诈降。".encode(), name="章" * 300 + ".txt", purpose="assistants")
    assert r.status_code == 200, r.text  # before: cut to 255 characters, ".txt" lost: "unsupported file type"
    name = r.json()["filename"]
    assert name.endswith(".txt") and len(name.encode()) <= 255
    r = upload(client, b"just some notes\n", name="notes.txt")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_file"
    assert "--from" not in r.json()["error"]["message"]  # a CLI option means nothing to an API client
