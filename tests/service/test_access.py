"""One key ring for every way in (API chat, the chat page, knowledge-base reads and writes), read per request; and
no server path in any response or on the page (documents are named by id, title and file name)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from service.keys import add_key, revoke_key

pytestmark = pytest.mark.integration

QUESTION = [{"role": "user", "content": "孔明向鲁肃借了多少只船？"}]


def ask(client: Any, key: str | None = None) -> Any:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return client.post("/v1/chat/completions", headers=headers, json={"model": "kongming-rag", "messages": QUESTION})


def kb_list(client: Any, key: str | None = None) -> Any:
    return client.get("/v1/kb/documents", headers={"authorization": f"Bearer {key}"} if key else {})


def server_root(kb_settings: Any) -> str:
    """The tmp folder holding the test novel: the path a leak would show."""
    return str(Path(kb_settings.data_dir).parent)


def page_answer(client: Any, key: str | None, route: str = "rag") -> str:
    """The chat page's answer to QUESTION, through the page's own respond function (what the browser triggers)."""
    from service.ui import make_respond

    app = client.app
    respond = make_respond(app.state.chat, app.state.keys)

    async def run() -> str:
        last = ""
        async for _, history, _ in respond(QUESTION[0]["content"], [], [], route, None, key or ""):
            last = history[-1]["content"]
        return last

    return asyncio.run(run())


# -- item 18: no server path ----------------------------------------------------------------------------------------


def test_citations_and_the_kb_listing_name_documents_without_server_paths(make_client, kb_settings, tmp_path):
    root = server_root(kb_settings)
    key, _ = add_key(tmp_path / "keys.json")
    client = make_client(keys_file=tmp_path / "keys.json")
    body = ask(client, key).json()
    citations = body["kongming"]["citations"]
    assert citations, body
    for c in citations:
        assert c["source"] == "xiao_sanguo.txt" and c["doc_id"] and c["document"], c
    assert root not in json.dumps(body, ensure_ascii=False)
    listing = kb_list(client, key)
    assert listing.status_code == 200
    docs = listing.json()["data"]
    assert [d["name"] for d in docs] == ["xiao_sanguo.txt"] and all(d["id"] and d["title"] for d in docs), docs
    assert root not in listing.text and "/" not in "".join(d["source"] for d in docs)
    streamed = client.post("/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                           json={"model": "kongming-rag", "messages": QUESTION, "stream": True})
    assert streamed.status_code == 200 and "xiao_sanguo.txt" in streamed.text and root not in streamed.text


def test_the_page_shows_no_server_path(make_client, kb_settings):
    from service.ui import citation_line

    client = make_client()
    shown = page_answer(client, None)
    assert "sources" in shown and root_free(shown, kb_settings), shown
    body = ask(client).json()
    from service.protocol import Citation

    for c in body["kongming"]["citations"]:
        assert root_free(citation_line(Citation(**c)), kb_settings)


def root_free(text: str, kb_settings: Any) -> bool:
    return server_root(kb_settings) not in text and "/tmp/" not in text


# -- item 19: one key ring, read per request ---------------------------------------------------------------------


def test_api_chat_locks_when_a_key_is_added_and_stays_locked_when_it_is_revoked(make_client, tmp_path):
    keys_file = tmp_path / "keys.json"
    client = make_client(keys_file=keys_file)
    assert ask(client).status_code == 200  # no key anywhere: chat is open (chat_auth auto)
    key, entry = add_key(keys_file, "alice")  # while the service runs
    assert ask(client).status_code == 401
    assert ask(client, key).status_code == 200
    revoke_key(keys_file, entry.id)
    assert ask(client, key).status_code == 401  # revoked: refused at once
    assert ask(client).status_code == 401  # no active key left: still locked, never opened to the revoked key
    second, _ = add_key(keys_file, "bob")
    assert ask(client, second).status_code == 200 and ask(client, key).status_code == 401


def test_the_page_obeys_the_same_key_ring_per_message(make_client, tmp_path):
    from service.ui import KEY_NEEDED, KEY_WRONG

    keys_file = tmp_path / "keys.json"
    client = make_client(keys_file=keys_file)
    assert "sources" in page_answer(client, None)  # open while no key exists
    key, entry = add_key(keys_file, "alice")  # added while the service runs: the next message needs it
    assert KEY_NEEDED in page_answer(client, None)
    assert KEY_WRONG in page_answer(client, "km-guessed")
    assert "sources" in page_answer(client, key)
    second, _ = add_key(keys_file, "bob")
    revoke_key(keys_file, entry.id)
    assert KEY_WRONG in page_answer(client, key)  # revoked: refused at once
    assert "sources" in page_answer(client, second)


def test_the_page_needs_a_key_whenever_chat_does(make_client, tmp_path):
    from service.ui import KEY_NEEDED

    required = make_client(chat_auth="required", keys_file=tmp_path / "none.json")
    assert ask(required).status_code == 401 and KEY_NEEDED in page_answer(required, None)
    opened = make_client(chat_auth="open", api_keys=["sk-open"])
    assert ask(opened).status_code == 200 and "sources" in page_answer(opened, None)


def test_kb_reads_and_writes_always_need_a_key(make_client, tmp_path):
    keys_file = tmp_path / "keys.json"
    client = make_client(keys_file=keys_file)
    upload = {"files": ("a.txt", "第一回 测试\n\n内容".encode(), "text/plain")}
    # no key configured: chat is open, the knowledge base is not (reads included)
    assert ask(client).status_code == 200
    for r in (kb_list(client), client.post("/v1/kb/documents", files=upload),
              client.delete("/v1/kb/documents/whatever")):
        assert r.status_code == 401 and "kongming keys add" in r.json()["error"]["message"], r.text
    key, entry = add_key(keys_file)
    auth = {"authorization": f"Bearer {key}"}
    assert kb_list(client).status_code == 401 and kb_list(client, "km-wrong").status_code == 401
    assert kb_list(client, key).status_code == 200
    assert client.delete("/v1/kb/documents/no-such-doc", headers=auth).status_code == 404  # past the key check
    revoke_key(keys_file, entry.id)
    assert kb_list(client, key).status_code == 401
    assert client.post("/v1/kb/documents", files=upload, headers=auth).status_code == 401


def test_upload_failures_name_the_file_not_the_server_folder(make_client, tmp_path):
    from service.routes.kb import scrub_paths

    key, _ = add_key(tmp_path / "keys.json")
    client = make_client(keys_file=tmp_path / "keys.json")
    files = [("files", ("bad.txt", b"\x00\xff" * 200, "text/plain")), ("files", ("x.exe", b"MZ", "text/plain"))]
    auth = {"authorization": f"Bearer {key}"}
    r = client.post("/v1/kb/documents", headers=auth, files=files)
    assert r.status_code == 400, r.text  # nothing of the upload could be ingested
    err = r.json()["error"]
    assert err["param"] == "files" and "bad.txt" in err["message"] and "x.exe" in err["message"], err
    assert str(tmp_path) not in r.text and "/svc/" not in r.text, r.text
    good = ("files", ("ok.txt", "诸葛亮字孔明，琅琊阳都人也。".encode(), "text/plain"))
    r = client.post("/v1/kb/documents", headers=auth, files=[good, *files])  # the rest of a batch goes on
    assert r.status_code == 200 and r.json()["added"] == 1, r.text
    assert sorted(f["file"] for f in r.json()["failed"]) == ["bad.txt", "x.exe"]
    assert str(tmp_path) not in r.text, r.text
    kept = {p.name for p in tmp_path.rglob("*") if p.is_file()}
    assert "ok.txt" in kept and not kept & {"bad.txt", "x.exe"}  # a refused upload is not kept on the server
    scrubbed = scrub_paths("refused: a link to /srv/kb/up/a.txt, outside /srv/kb/up")
    assert scrubbed == "refused: a link to a.txt, outside up"
    assert scrub_paths("unsupported file type .exe: use one of ['.md', '.txt']") == (
        "unsupported file type .exe: use one of ['.md', '.txt']")
