"""The Knowledge-base tab's actions in process (KbConsole over the app's vector stores): a document is deleted only
when chosen and confirmed."""

from __future__ import annotations

import time
from typing import Any

import pytest

from service.ui.kb import KbConsole

KEY = "sk-kb-console"
DOC = "第四十九回 七星坛诸葛祭风\n\n赤壁之后，孔明在南屏山筑七星坛，借得三日东南大风。周瑜见风起，大惊失色。"


def console(make_client: Any) -> tuple[KbConsole, Any]:
    client = make_client(api_keys=[KEY])
    app = client.app
    return KbConsole(app.state.chat, app.state.keys, app.state), app.state.vector_stores


def wait_done(vs: Any, store: str, file_id: str) -> dict[str, Any]:
    for _ in range(600):
        p = vs.progress(store, file_id)
        if p["stage"] in ("completed", "failed"):
            return p
        time.sleep(0.1)
    raise AssertionError(f"not ingested: {p}")


def test_a_document_is_deleted_only_when_chosen_and_confirmed(make_client):
    import gradio as gr

    kb, vs = console(make_client)
    store = vs.create("delete test")["id"]
    added = vs.add_file(store, "qixingtan.txt", DOC.encode())
    wait_done(vs, store, added["id"])
    _, pick = kb.files(KEY, store)
    assert pick["value"] is None and [c[1] for c in pick["choices"]] == [added["id"]], "listed, none preselected"
    with pytest.raises(gr.Error, match="nothing was deleted"):
        kb.delete(KEY, store, added["id"])
    with pytest.raises(gr.Error, match="nothing was deleted"):
        kb.delete(KEY, store, added["id"], False)
    assert [f["id"] for f in vs.list_files(store)] == [added["id"]]
    with pytest.raises(gr.Error, match="choose a document"):
        kb.delete(KEY, store, None, True)
    said, *_, confirm = kb.delete(KEY, store, added["id"], True)
    assert said == "deleted qixingtan.txt" and confirm is False, "the confirmation is cleared for the next one"
    assert vs.list_files(store) == []
