"""The Knowledge-base tab's actions in process (KbConsole over the app's vector stores): a document is deleted only
when chosen and confirmed; the upload's progress counts agree with the chunks the files end with, and an upload whose
every file failed is not called ingested."""

from __future__ import annotations

import time
from typing import Any

import pytest

from service.ui.kb import KbConsole, upload_progress

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


@pytest.mark.filterwarnings("ignore:tick:UserWarning")  # gr.Warning outside a page request
def test_a_document_is_deleted_only_when_chosen_and_confirmed(make_client):
    import gradio as gr

    kb, vs = console(make_client)
    store = vs.create("delete test")["id"]
    added = vs.add_file(store, "qixingtan.txt", DOC.encode())
    wait_done(vs, store, added["id"])
    _, pick = kb.files(KEY, store)
    assert pick["value"] is None and [c[1] for c in pick["choices"]] == [added["id"]], "listed, none preselected"
    assert "nothing was deleted" in kb.delete(KEY, store, added["id"])[0]
    assert "nothing was deleted" in kb.delete(KEY, store, added["id"], False)[0]
    assert [f["id"] for f in vs.list_files(store)] == [added["id"]]
    with pytest.raises(gr.Error, match="choose a document"):
        kb.delete(KEY, store, None, True)
    said, *_, confirm = kb.delete(KEY, store, added["id"], True)
    assert said == "deleted qixingtan.txt" and confirm is False, "the confirmation is cleared for the next one"
    assert vs.list_files(store) == []


def test_the_upload_progress_counts_the_pass_apart_from_each_files_chunks():
    names = {"a": "a.txt", "b": "b.txt"}
    during = upload_progress(names, {"a": {"stage": "embedding", "done": 0, "total": 2},
                                     "b": {"stage": "embedding", "done": 0, "total": 2}})  # fmt: skip
    assert "- a.txt: embedding (searchable)" in during and "0/2" not in during.split("\n")[1], during
    assert during.count("0/2") == 1 and "ingesting" in during, "the pass is counted once, not as each file's"
    assert "- embedding 0/2 chunks" in during, during  # (the whole-novel browser test reads this form)
    after = upload_progress(names, {"a": {"stage": "completed", "done": 1, "total": 1},
                                    "b": {"stage": "completed", "done": 1, "total": 1}})  # fmt: skip
    assert after.startswith("**ingested**") and "- a.txt: completed, 1 chunk\n" in after, after


def test_an_upload_whose_every_file_failed_is_not_called_ingested():
    failed = {"stage": "failed", "done": 0, "total": 0}
    ok = {"stage": "completed", "done": 3, "total": 3}
    assert "ingested" not in upload_progress({"a": "a.exe", "b": "b.exe"}, {"a": failed, "b": failed})
    assert "ingested" not in upload_progress({"a": "a.exe"}, {"a": failed})
    some = upload_progress({"a": "a.exe", "b": "b.txt"}, {"a": failed, "b": ok})
    assert some.startswith("**ingested 1 of 2 (1 failed)**"), some


def test_the_progress_of_a_real_upload_agrees_with_the_chunks_it_ends_with(make_client, tmp_path):
    kb, vs = console(make_client)
    store = vs.create("upload test")["id"]
    paths = []
    for i in range(3):
        (tmp_path / f"doc{i}.txt").write_text(DOC + f"（其{i}）", encoding="utf-8")
        paths.append(str(tmp_path / f"doc{i}.txt"))
    (tmp_path / "bad.exe").write_bytes(b"MZ")
    states = [said for said, *_ in kb.upload(KEY, store, [*paths, str(tmp_path / "bad.exe")])]
    chunks = {f["kongming"]["filename"]: f["kongming"]["chunks"] for f in vs.list_files(store)}
    for i in range(3):
        n = chunks[f"doc{i}.txt"]
        assert f"- doc{i}.txt: completed, {n} chunk{'s' * (n != 1)}" in states[-1], states[-1]
    assert states[-1].startswith("**ingested 3 of 4 (1 failed)**"), states[-1]
    for said in states:
        for line in said.split("\n"):
            if line.startswith("- doc"):
                assert "/" not in line, f"a file's line carries no pass count: {line}"
    only_bad = [said for said, *_ in kb.upload(KEY, store, [str(tmp_path / "bad.exe")])]
    assert "ingested" not in only_bad[-1] and only_bad[-1].startswith("**failed**"), only_bad[-1]
