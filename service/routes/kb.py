"""The knowledge base over HTTP: list, upload (ingest) and remove documents; all of them need an API key. Documents
are named by id, title and file name: the server's folders never appear in a response. An upload answers once its
documents are keyword-searchable; their embedding goes on in the background (the vector stores' ingest thread)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, UploadFile

from ..answer.retrieval import source_name
from ..errors import BadRequest
from ..uploads import save_upload, shown_name, upload_target
from .deps import Chat, KbKey, Settings, VectorStores

_ABS_PATH = re.compile(r"(?<![\w.~])/(?:[^\s/'\"(),:;]+/)+(?=[^\s/'\"(),:;]+)")


def scrub_paths(text: str) -> str:
    """A reason with the folders of any absolute path taken out (`/srv/kb/uploads/a.txt` -> `a.txt`)."""
    return _ABS_PATH.sub("", text)


router = APIRouter(prefix="/v1/kb", tags=["knowledge base"])


@router.get("/documents", dependencies=[KbKey])
async def kb_list(chat: Chat) -> dict[str, Any]:
    from ingest.pipeline import list_documents

    docs = await chat.kb.run(list_documents, chat.kb.settings)
    return {"object": "list", "data": [_doc(d) for d in docs]}


def _doc(d: Any) -> dict[str, Any]:
    name = source_name(d.source)  # `source` keeps its key for older clients, but holds the file name only
    return {"id": d.doc_id, "name": name, "source": name, "title": d.title, "chunks": d.n_chunks,
            "status": d.status, "chars": d.chars,
            "embedded_chunks": d.embedded}  # of `chunks`; the rest answer keyword searches and are being embedded


@router.post("/documents", dependencies=[KbKey])
async def kb_upload(
    chat: Chat, settings: Settings, stores: VectorStores, files: Annotated[list[UploadFile], File()]
) -> dict[str, Any]:
    # every name is checked before any file is written; a file refused by its name is left out
    refused_names: list[dict[str, Any]] = []
    kept: list[UploadFile] = []
    for f in files:
        try:
            upload_target(settings.upload_dir(), f.filename)
            kept.append(f)
        except BadRequest as e:
            refused_names.append({"file": shown_name(f.filename), "reason": e.message})
    if not kept:
        reasons = "; ".join(str(r["reason"]) for r in refused_names)
        raise BadRequest(reasons if len(files) == 1 else f"no file of the upload has a name it can keep ({reasons})",
                         param="files")
    files = kept
    names = [str(f.filename) for f in files]  # checked: none is empty
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # a document is its file name: the second would replace the first before it is read
        raise BadRequest(f"two files named {twice[0]!r} in one upload: give each file its own name", param="files")
    async with stores.upload_lock:  # another request's file of the same name waits until this one's is read
        paths = [await save_upload(settings.upload_dir(), f) for f in files]
        # answered after the keyword phase (seconds, also for a novel); the embedding continues in the background
        summary = await asyncio.wrap_future(stores.add_documents(chat.kb.settings.collection, paths))
    failed = [*refused_names, *({"file": Path(p.path).name, "reason": scrub_paths(p.reason)} for p in summary.failed)]
    refused = {Path(p.path).resolve() for p in summary.failed}
    for path in paths:  # a refused file is not kept on the server
        if Path(path).resolve() in refused:
            Path(path).unlink(missing_ok=True)
    if len(summary.failed) == len(paths):  # nothing of the upload could be ingested: a client error, not a 200
        reasons = "; ".join(f"{f['file']}: {f['reason']}" for f in failed)
        raise BadRequest(f"no file of the upload could be ingested ({reasons})", param="files", code="unreadable_file")
    return {
        "added": summary.added_docs,
        "changed": summary.updated_docs,
        "unchanged": summary.unchanged,
        "chunks_added": summary.chunks_added,
        # the knowledge base's chunks still without a vector (these documents' and any earlier): they answer
        # keyword and hybrid searches now; GET /v1/kb/documents shows each document's embedded_chunks of chunks
        "chunks_to_embed": summary.chunks_unembedded,
        "searchable_seconds": round(summary.searchable_seconds, 3),
        "failed": failed,  # the files refused beside those ingested: the rest of a batch goes on
        # ingested, with a note: the same text as another document (both kept, as `ingest add` says)
        "warnings": [{"file": source_name(p.path), "message": scrub_paths(p.reason)} for p in summary.warnings],
    }


@router.delete("/documents/{doc_id}", dependencies=[KbKey])
async def kb_remove(doc_id: str, chat: Chat, stores: VectorStores) -> dict[str, Any]:
    # in turn with the background ingest's writes (unknown id: 404, errors.py)
    summary = await asyncio.to_thread(stores.remove_documents, chat.kb.settings.collection, [doc_id])
    return {"id": doc_id, "deleted": True, "chunks_removed": summary.chunks_removed}
