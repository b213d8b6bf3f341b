"""The Knowledge-base tab over the vector-store service (app.state.vector_stores, the same calls as
/v1/vector_stores): stores, upload with ingest progress, documents with chunk counts, delete, chunk preview, and the
retrieval test (hits with their dense, keyword and fused scores and chapter)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.errors import IngestError

from ..errors import ServiceError, error_body
from ..keys import KeyRing
from ..routes.kb import scrub_paths
from ..vector_stores.ingesting import EMBEDDING
from .access import require_key, table
from .render import store_label

if TYPE_CHECKING:
    from ..answer.chat import ChatService

POLL_S = 0.5
FILE_COLUMNS = ["id", "filename", "status", "chunks", "error"]
CHUNK_COLUMNS = ["index", "chapter", "chapter_title", "text"]
HIT_COLUMNS = ["rank", "filename", "chapter", "chapter_title", "dense", "keyword", "fused", "text"]
PREVIEW_CHARS = 300
CONFIRM = "确认删除 confirm delete"
# the text columns take the room; short columns wide enough for their header in one word ("index", not "ind/ex")
FILE_WIDTHS = ["22%", "30%", "12%", "10%", "26%"]
CHUNK_WIDTHS = ["8%", "9%", "18%", "65%"]
HIT_WIDTHS = ["6%", "13%", "9%", "14%", "8%", "9%", "7%", "34%"]


class KbConsole:
    """The tab's actions, each checked against the key ring; service errors become the page's error message."""

    def __init__(self, chat: ChatService, ring: KeyRing, state: Any) -> None:
        self.chat, self.ring, self.state = chat, ring, state

    @property
    def default_store(self) -> str:
        return "vs_" + self.chat.kb.settings.collection

    def stores(self, key: str) -> Any:
        require_key(self.ring, key)
        return self._call(lambda vs: vs.list())

    def _call(self, fn: Any) -> Any:
        import gradio as gr

        vs = getattr(self.state, "vector_stores", None)
        if vs is None:
            raise gr.Error("this service runs without the vector-store service", title="knowledge base")
        try:
            return fn(vs)
        except (ServiceError, IngestError) as exc:
            raise gr.Error(scrub_paths(error_body(exc)[1].error.message), title="knowledge base") from None

    def store_choices(self, key: str, chosen: str | None) -> Any:
        import gradio as gr

        stores = self.stores(key)
        choices = [(store_label(s), s["id"]) for s in stores]
        ids = [s["id"] for s in stores]
        value = chosen if chosen in ids else self.default_store if self.default_store in ids else (ids or [None])[0]
        return gr.update(choices=choices, value=value)

    def create(self, key: str, name: str) -> Any:
        import gradio as gr

        require_key(self.ring, key)
        made = self._call(lambda vs: vs.create(name.strip() or None))
        return self.store_choices(key, made["id"]), gr.update(value="")

    def files(self, key: str, store: str | None) -> tuple[Any, Any]:
        """(the documents table, the file dropdown) of a store."""
        import gradio as gr

        require_key(self.ring, key)
        if not store:
            return table([], FILE_COLUMNS), gr.update(choices=[], value=None)
        found = self._call(lambda vs: vs.list_files(store))
        rows = [{"id": f["id"], "filename": f["kongming"].get("filename") or f["kongming"].get("title"),
                 "status": f["status"], "chunks": f["kongming"].get("chunks"),
                 "error": (f.get("last_error") or {}).get("message") or f["kongming"].get("warning")}
                for f in found]  # fmt: skip
        names = [r["filename"] for r in rows]  # two files of one name are told apart by their ids
        choices = [(f"{r['filename']} ({r['chunks']} chunk{'' if r['chunks'] == 1 else 's'}"
                    + (f", {r['id']})" if names.count(r["filename"]) > 1 else ")"), r["id"]) for r in rows]
        # none chosen: «delete» acts on the chosen document, which the user picks, never a preselected first one
        return table(rows, FILE_COLUMNS), gr.update(choices=choices, value=None)

    def upload(self, key: str, store: str | None, paths: list[str] | None) -> Iterator[tuple[Any, ...]]:
        """Attach the files, then report each one's ingest (stage, chunks embedded of total) until all are done:
        (progress, documents table, document dropdown, store dropdown, the upload box emptied). A file in the
        "embedding" stage is searchable already (the retrieval test and the chat find it): the progress says so."""
        import gradio as gr

        require_key(self.ring, key)
        if not store or not paths:
            raise gr.Error("choose a knowledge base and one or more files", title="knowledge base")
        added = [self._call(lambda vs, p=p: vs.add_file(store, Path(p).name, Path(p).read_bytes())) for p in paths]
        names = {f["id"]: f["kongming"]["filename"] for f in added}
        while True:
            progress = {i: self._call(lambda vs, i=i: vs.progress(store, i)) for i in names}
            done = all(p["stage"] in ("completed", "failed") for p in progress.values())
            docs, pick = self.files(key, store)  # the files in progress are listed while they ingest
            stores = self.store_choices(key, store) if done else gr.update()  # its file count changed
            yield upload_progress(names, progress), docs, pick, stores, None  # the box emptied: no duplicates
            if done:
                return
            time.sleep(POLL_S)

    def delete(self, key: str, store: str | None, file_id: str | None, confirmed: bool = False) -> tuple[Any, ...]:
        """(progress naming the deleted file, documents table, document dropdown, store dropdown, the confirmation
        box cleared). Deletes only a chosen document with the «确认删除» box ticked."""
        import gradio as gr

        require_key(self.ring, key)
        if not store or not file_id:
            raise gr.Error("choose a document to delete", title="knowledge base")
        found = self._call(lambda vs: vs.retrieve_file(store, file_id))
        name = found["kongming"].get("filename") or found["kongming"].get("title") or file_id
        if not confirmed:  # said, not raised: an error would lay its overlay over the box to tick
            said = f"tick «{CONFIRM}» to delete {name}: nothing was deleted"
            gr.Warning(said, title="knowledge base")
            return said, gr.update(), gr.update(), gr.update(), gr.update()
        self._call(lambda vs: vs.delete_file(store, file_id))
        return f"deleted {name}", *self.files(key, store), self.store_choices(key, store), False

    def on_key(self, key: str, store: str | None) -> tuple[Any, Any, Any]:
        """The stores and documents as soon as a valid key is entered; nothing (and no error) for another key."""
        import gradio as gr

        from .access import console_refusal

        if console_refusal(self.ring, key) is not None or getattr(self.state, "vector_stores", None) is None:
            return gr.update(), gr.update(), gr.update()
        choices = self.store_choices(key, store)
        return choices, *self.files(key, choices.get("value"))

    def chunks(self, key: str, store: str | None, file_id: str | None) -> Any:
        require_key(self.ring, key)
        if not store or not file_id:
            return table([], CHUNK_COLUMNS)
        found = self._call(lambda vs: vs.chunks(store, file_id, 20, 0))
        return table([{**c, "text": _cut(c["text"])} for c in found], CHUNK_COLUMNS)

    def search(self, key: str, store: str | None, query: str, k: float) -> Any:
        """The retrieval test: hits best first with rank, file, chapter and the three scores."""
        import gradio as gr

        require_key(self.ring, key)
        if not store or not query.strip():
            raise gr.Error("choose a knowledge base and write a question", title="knowledge base")
        hits = self._call(lambda vs: vs.search(store, query, int(k or 5)))
        rows = [{"rank": n, "filename": h["filename"], **{c: h["attributes"].get(c) for c in HIT_COLUMNS[2:7]},
                 "text": _cut(h["content"][0]["text"])} for n, h in enumerate(hits, 1)]  # fmt: skip
        return table(rows, HIT_COLUMNS)


def upload_progress(names: dict[str, str], progress: dict[str, dict[str, Any]]) -> str:
    """The upload's progress (Markdown): a heading, each file's stage (its own chunk count once done), and the
    embedding pass's count on a line of its own: while embedding, `done`/`total` count the store's whole pass (every
    file of the upload), not one file's chunks. The heading says «ingested» only of files that were."""
    failed = sum(p["stage"] == "failed" for p in progress.values())
    finished = all(p["stage"] in ("completed", "failed") for p in progress.values())
    embedding = [p for p in progress.values() if p["stage"] in EMBEDDING and p["total"]]
    lines = []
    for i, p in progress.items():
        stage, n = p["stage"], p["total"]
        count = f", {n} chunk{'s' * (n != 1)}" if stage == "completed" else ""
        count += " (searchable)" if stage in EMBEDDING else ""
        lines.append(f"- {names[i]}: {stage}{count}")
    if embedding:
        p = max(embedding, key=lambda p: p["total"])
        lines.append(f"- embedding {p['done']}/{p['total']} chunks (all the knowledge base's new chunks)")
    if not finished:
        searchable = all(p["stage"] in (*EMBEDDING, "completed", "failed") for p in progress.values())
        state = "ingesting… searchable now, embedding" if searchable else "ingesting…"
    elif failed == len(progress):
        state = "all failed" if failed > 1 else "failed"
    else:
        state = f"ingested {len(progress) - failed} of {len(progress)} ({failed} failed)" if failed else "ingested"
    return f"**{state}**\n" + "\n".join(lines)


def _cut(text: str) -> str:
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "…"


def build_kb_tab(gr: Any, chat: ChatService, ring: KeyRing, key: Any, state: Any) -> None:
    kb = KbConsole(chat, ring, state)
    with gr.Row():
        store = gr.Dropdown([], label="知识库 knowledge base (vector store)", elem_id="kb-store", scale=3)
        refresh = gr.Button("加载/刷新 load / refresh", elem_id="kb-refresh", scale=1)
        new_name = gr.Textbox(label="新建知识库 new knowledge base", placeholder="名称 name", elem_id="kb-new-name",
                              scale=2)  # fmt: skip
        create = gr.Button("新建 create", elem_id="kb-create", scale=1)
    files = gr.File(label="上传文档 upload documents (.txt .md .html .pdf .docx .jsonl)", file_count="multiple",
                    type="filepath", elem_id="kb-upload")  # fmt: skip
    ingest = gr.Button("上传并入库 upload and ingest", variant="primary", elem_id="kb-ingest")
    progress = gr.Markdown(elem_id="kb-progress")
    docs = gr.Dataframe(table([], FILE_COLUMNS), label="文档 documents", interactive=False, elem_id="kb-docs",
                        wrap=True, column_widths=FILE_WIDTHS)
    with gr.Row():
        doc = gr.Dropdown([], label="文档 document", elem_id="kb-doc", scale=3)
        show = gr.Button("预览分块 preview chunks", elem_id="kb-show", scale=1)
        confirm = gr.Checkbox(False, label=CONFIRM, elem_id="kb-confirm", scale=1)
        delete = gr.Button("删除文档 delete document", variant="stop", elem_id="kb-delete", scale=1)
    chunks = gr.Dataframe(table([], CHUNK_COLUMNS), label="分块 chunks", interactive=False, wrap=True,
                          elem_id="kb-chunks", column_widths=CHUNK_WIDTHS)  # fmt: skip
    gr.Markdown("**检索测试 retrieval test**")
    with gr.Row():
        query = gr.Textbox(label="问题 question", placeholder="草船借箭", elem_id="kb-query", scale=4)
        k = gr.Number(5, label="k", precision=0, minimum=1, maximum=50, elem_id="kb-k", scale=1)
        test = gr.Button("检索 search", variant="primary", elem_id="kb-search", scale=1)
    hits = gr.Dataframe(table([], HIT_COLUMNS), label="命中 hits", interactive=False, wrap=True, elem_id="kb-hits",
                      column_widths=HIT_WIDTHS)

    private = {"api_visibility": "private"}
    refresh.click(kb.store_choices, [key, store], store, **private).then(kb.files, [key, store], [docs, doc], **private)
    store.input(kb.files, [key, store], [docs, doc], **private)
    create.click(kb.create, [key, new_name], [store, new_name], **private).then(
        kb.files, [key, store], [docs, doc], **private)
    ingest.click(kb.upload, [key, store, files], [progress, docs, doc, store, files], **private)
    show.click(kb.chunks, [key, store, doc], chunks, **private)
    delete.click(kb.delete, [key, store, doc, confirm], [progress, docs, doc, store, confirm], **private)
    key.change(kb.on_key, [key, store], [store, docs, doc], show_progress="hidden", **private)
    test.click(kb.search, [key, store, query, k], hits, **private)
    query.submit(kb.search, [key, store, query, k], hits, **private)
