"""Knowledge bases as OpenAI vector stores: a store is a Chroma collection (ingest's), a file is an upload ingested
into it in the background by ingest's pipeline; objects come back in OpenAI's shapes, without server paths."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

from ingest.embedding import Embedder
from ingest.errors import IngestError
from ingest.kb import count_embedded, drop_collection, open_store
from ingest.loaders import SUPPORTED
from ingest.settings import IngestSettings
from ingest.store import DocRecord, validate_name

from ..answer.retrieval import source_name
from ..errors import BadRequest, NotFound
from ..uploads import upload_target
from .ingesting import EMBEDDING, BackgroundIngest, _inside
from .registry import COMPLETED, FAILED, IN_PROGRESS, FileEntry, Registry, StoreEntry, file_counts, now
from .search import StoreSearch

log = logging.getLogger(__name__)
PREFIX = "vs_"  # a store's id is PREFIX + its collection name: the service's default collection is "vs_default"
MAX_METADATA = 16
List = list  # the class has a method named `list`


def store_id(collection: str) -> str:
    return PREFIX + collection


class VectorStoreService(StoreSearch, BackgroundIngest):
    """Vector stores over the knowledge base's collections; built once per app (`app.state.vector_stores`).

    Thread-safe: files are ingested one at a time on a background thread (BackgroundIngest: keyword phase first,
    then the embedding, which gives way to the next file); a store's writes (ingest, delete) hold that store's
    lock; reads run in the caller's thread. Every collection of the store (those made by the
    `ingest` CLI too) is a vector store, `vs_<collection>`; a document not attached through this API is listed as
    a file whose id is its document id. Errors are service errors (404 unknown store or file, 400 bad input)."""

    def __init__(self, settings: IngestSettings, data_dir: Path, embedder: Embedder | None = None) -> None:
        StoreSearch.__init__(self, settings, embedder)
        BackgroundIngest.__init__(self)
        self.root = data_dir / "vector_stores"
        self.registry = Registry(self.root / "registry.json")
        # /v1/kb/documents: one upload at a time is written and read, so that another request's file of the same
        # name (the same document) does not replace this one's between the two (its keyword phase: seconds)
        self.upload_lock = asyncio.Lock()
        for f in [f for f in self.registry.files.values() if f.status == IN_PROGRESS]:  # a stop interrupted them
            self._enqueue(f.collection, f.id, self.root / "files" / f.collection / f.id / f.filename)
        self.resume()  # and what any collection still lacks of its vectors, after them

    # --- stores -------------------------------------------------------------------------------------------------
    def create(self, name: str | None, metadata: dict[str, str] | None = None) -> dict[str, Any]:
        """A new, empty store (a new collection): the vector_store object, `id` "vs_<24 hex>", status completed."""
        _check_metadata(metadata)
        collection = secrets.token_hex(12)
        open_store(self.settings, collection)  # creates its collections now: it is listed from here on
        with self.registry.lock:
            self.registry.stores[collection] = StoreEntry(collection, name, now(), dict(metadata or {}))
            self.registry.save()
        return self.retrieve(store_id(collection))

    def list(self) -> List[dict[str, Any]]:
        """Every store, newest first by created_at (stores made in the same second in the order they were made;
        an empty one the API did not create, created_at 0, last)."""
        with self.registry.lock:  # (another thread may be creating one)
            made = {c: n for n, c in enumerate(self.registry.stores)}  # creation order, within a second too
        stores = [self._store_object(c) for c in set(self._served()) | set(made)]
        return sorted(stores, key=lambda s: (-s["created_at"], -made.get(s["id"].removeprefix(PREFIX), -1), s["id"]))

    def retrieve(self, store_id: str) -> dict[str, Any]:
        """The vector_store object: id, name, created_at, usage_bytes, file_counts, status, metadata...; NotFound."""
        return self._store_object(self.collection_of(store_id))

    def modify(self, store_id: str, name: str | None = None, metadata: dict[str, str] | None = None) -> dict[str, Any]:
        """Rename a store and/or replace its metadata (OpenAI's POST /vector_stores/{id})."""
        _check_metadata(metadata)
        collection = self.collection_of(store_id)
        with self.registry.lock:  # a collection the API did not make keeps its first document's time (created_at 0)
            entry = self.registry.stores.setdefault(collection, StoreEntry(collection, collection, 0))
            entry.name = entry.name if name is None else name
            entry.metadata = entry.metadata if metadata is None else dict(metadata)
            self.registry.save()
        return self.retrieve(store_id)

    def delete(self, store_id: str) -> dict[str, Any]:
        """Delete a store with its files and chunks: `{id, object: "vector_store.deleted", deleted: true}`. The
        service's default knowledge base cannot be deleted (BadRequest): remove its files instead."""
        collection = self.collection_of(store_id)
        if collection == self.settings.collection:
            raise BadRequest(f"{store_id} is the service's default knowledge base (KONGMING_COLLECTION): delete its "
                             "files instead", param="vector_store_id")
        with self._lock(collection):
            self.forget(collection)
            drop_collection(self.settings, open_store(self.settings, collection))
            with self.registry.lock:
                self.registry.stores.pop(collection, None)
                for f in self.registry.files_of(collection):
                    del self.registry.files[f.id]
                for b in [b for b in self.registry.batches.values() if b.collection == collection]:
                    del self.registry.batches[b.id]
                self.registry.save()
            shutil.rmtree(self.root / "files" / collection, ignore_errors=True)
        return {"id": store_id, "object": "vector_store.deleted", "deleted": True}

    def collection_of(self, store_id: str) -> str:
        """The collection behind a store id; NotFound for an id that names none."""
        name = store_id.removeprefix(PREFIX)
        try:
            valid = store_id.startswith(PREFIX) and validate_name(name) == name
        except IngestError:
            valid = False
        if not valid or (name not in self.registry.stores and name not in self._served()):
            raise NotFound(f"No vector store found with id '{store_id}'", param="vector_store_id",
                           code="vector_store_not_found")
        return name

    def _store_object(self, collection: str) -> dict[str, Any]:
        entry = self.registry.stores.get(collection)
        files = self._file_objects(collection)
        counts = file_counts_of(files)
        return {
            "id": store_id(collection), "object": "vector_store", "name": entry.name if entry else collection,
            "created_at": entry.created_at if entry and entry.created_at else self._first_record_time(collection),
            "last_active_at": entry.last_active_at if entry else None,
            "usage_bytes": sum(f["usage_bytes"] for f in files), "file_counts": counts,
            "status": "in_progress" if counts["in_progress"] else "completed",
            "metadata": dict(entry.metadata) if entry else {}, "expires_after": None, "expires_at": None,
        }  # fmt: skip

    def _first_record_time(self, collection: str) -> int:
        """For a collection the API did not create: when its oldest document was written (Unix seconds; 0 if none)."""
        return int(min((r.updated_at for r in self.records(collection).values()), default=0))

    # --- files --------------------------------------------------------------------------------------------------
    def add_file(
        self, store_id: str, filename: str, data: bytes, file_id: str | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Attach a document (.txt .md .html .pdf .docx .jsonl): returns its vector_store.file at once, status
        "in_progress"; ingest runs on a background thread: the file answers searches and chats once it is chunked
        and keyword-indexed (`kongming.searchable`, seconds), and its status is "completed" once its chunks are
        embedded too (minutes for a novel), or "failed" with
        `last_error` {code: "unsupported_file" | "invalid_file" | "server_error", message}. `file_id` is the
        Files API id when the bytes come from there (else a new "file-..." id); `attributes` are OpenAI's (at most
        16, kept and returned). A bad name is a BadRequest."""
        collection = self.collection_of(store_id)
        folder_id = file_id or "file-" + secrets.token_hex(12)
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", folder_id):
            raise BadRequest(f"invalid file id {folder_id!r}", param="file_id")
        folder = self.root / "files" / collection / folder_id
        target = upload_target(folder, filename)  # plain names only: BadRequest otherwise
        _check_metadata(attributes, "attributes")
        entry = FileEntry(folder_id, collection, filename, now(), len(data), attributes=dict(attributes or {}))
        with self.registry.lock:
            if folder_id in self.registry.files:
                raise BadRequest(f"file {folder_id} is already attached to vector store "
                                 f"{PREFIX}{self.registry.files[folder_id].collection}", param="file_id")
            self.registry.files[folder_id] = entry
            self.registry.save()
        self.registry.touch(collection)
        if Path(filename).suffix.lower() not in SUPPORTED:
            kinds = ", ".join(sorted(SUPPORTED))
            why = f"unsupported file type {Path(filename).suffix or '(none)'}: use one of {kinds}"
            self.registry.update_file(folder_id, status=FAILED, last_error={"code": "unsupported_file", "message": why})
            return self.retrieve_file(store_id, folder_id)
        folder.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        self._enqueue(collection, folder_id, target)
        return self._file_object(entry)

    def list_files(self, store_id: str) -> List[dict[str, Any]]:
        """The store's vector_store.file objects, newest first; each has `kongming` {filename, chunks, documents,
        progress} (and `title` for a document added by the `ingest` CLI or /v1/kb)."""
        return self._file_objects(self.collection_of(store_id))

    def retrieve_file(self, store_id: str, file_id: str) -> dict[str, Any]:
        """One vector_store.file object; NotFound when the store has no such file."""
        for f in self._file_objects(self.collection_of(store_id)):
            if f["id"] == file_id:
                return f
        raise NotFound(f"No file found with id '{file_id}' in vector store '{store_id}'", param="file_id",
                       code="file_not_found")

    def delete_file(self, store_id: str, file_id: str) -> dict[str, Any]:
        """Detach a file and remove its chunks from search (a queued file at once; a running ingest of its store
        is waited for):
        `{id, object: "vector_store.file.deleted", deleted: true}`."""
        collection = self.collection_of(store_id)
        found = self.retrieve_file(store_id, file_id)
        with self.registry.lock:  # still queued: nothing is written yet, so it goes at once
            queued = self.progress_stage(file_id) == "queued" and self.registry.files.pop(file_id, None) is not None
            if queued:
                self.registry.save()
                self._progress.pop(file_id, None)
        if queued:
            shutil.rmtree(self.root / "files" / collection / file_id, ignore_errors=True)
            return {"id": found["id"], "object": "vector_store.file.deleted", "deleted": True}
        with self._lock(collection):  # an ingest of this store holds it: its documents are known after it
            entry = self.registry.files.get(file_id)
            with self.registry.lock:
                self.registry.files.pop(file_id, None)
                self.registry.save()
            from ingest.pipeline import remove_documents

            targets = entry.doc_ids if entry else [file_id]
            if entry is not None and not entry.doc_ids:
                records = open_store(self.settings, collection).records()
                targets = [r.doc_id for r in records.values() if _inside(r, self.root / "files" / collection / file_id)]
            present = set(open_store(self.settings, collection).records(targets)) if targets else set()
            targets = [t for t in targets if t in present]  # its documents may be gone already (DELETE /v1/kb)
            if targets:
                remove_documents(targets, self.settings, collection)
            shutil.rmtree(self.root / "files" / collection / file_id, ignore_errors=True)
            self._progress.pop(file_id, None)
        return {"id": found["id"], "object": "vector_store.file.deleted", "deleted": True}

    def update_file(self, store_id: str, file_id: str, attributes: dict[str, Any] | None) -> dict[str, Any]:
        """Replace an attached file's attributes (OpenAI's POST /vector_stores/{id}/files/{file_id})."""
        self.retrieve_file(store_id, file_id)
        _check_metadata(attributes, "attributes")
        if self.registry.update_file(file_id, attributes=dict(attributes or {})) is None:
            raise BadRequest(f"{file_id} was not attached through this API: it has no attributes", param="file_id")
        return self.retrieve_file(store_id, file_id)

    def progress(self, store_id: str, file_id: str) -> dict[str, Any]:
        """Where a file's ingest is, for a progress bar: {"stage": "queued" | "reading" | "embedding" | "indexing" |
        "completed" | "failed", "done": chunks embedded, "total": chunks to embed (0 until embedding starts)}.
        From "embedding" on, the file's chunks already answer keyword and hybrid searches (ingest's two phases); "done"
        and "total" then count the chunks of the store's embedding pass (this file's, and any another left)."""
        f = self.retrieve_file(store_id, file_id)
        if f["status"] != IN_PROGRESS:
            chunks = f["kongming"]["chunks"]
            return {"stage": f["status"], "done": chunks, "total": chunks}
        return dict(self._progress.get(file_id) or f["kongming"].get("progress") or {"stage": "queued", "done": 0,
                                                                                     "total": 0})

    def _file_objects(self, collection: str) -> List[dict[str, Any]]:
        """Attached files, newest first, then the collection's other documents (the `ingest` CLI's, /v1/kb's)."""
        store = self.store(collection)
        records = count_embedded(store, store.records())
        entries = self._without_removed(self.registry.files_of(collection), records)
        owned = {d for f in entries for d in f.doc_ids}
        out = [self._file_object(f) for f in reversed(entries)]
        for rec in records.values():
            if rec.doc_id not in owned and not _inside(rec, self.root / "files" / collection):
                out.append(_document_object(collection, rec, self._chunking()))
        return out

    def _without_removed(self, entries: List[FileEntry], records: dict[str, DocRecord]) -> List[FileEntry]:
        """The attached files but those whose documents were all removed another way (DELETE /v1/kb/documents, the
        `ingest remove` CLI): detached from the registry as they are found."""
        gone = [f for f in entries if f.status == COMPLETED and f.doc_ids and not any(d in records for d in f.doc_ids)]
        if gone:
            with self.registry.lock:
                for f in gone:
                    self.registry.files.pop(f.id, None)
                self.registry.save()
            for f in gone:
                shutil.rmtree(self.root / "files" / f.collection / f.id, ignore_errors=True)
        return [f for f in entries if f not in gone]

    def _file_object(self, f: FileEntry) -> dict[str, Any]:
        searchable = f.status == COMPLETED or self.progress_stage(f.id) in EMBEDDING
        return {
            "id": f.id, "object": "vector_store.file", "created_at": f.created_at, "usage_bytes": f.usage_bytes,
            "vector_store_id": store_id(f.collection), "status": f.status, "last_error": f.last_error,
            "attributes": f.attributes or None, "chunking_strategy": self._chunking(),
            "kongming": {"filename": f.filename, "chunks": f.chunks, "documents": list(f.doc_ids),
                         "searchable": searchable, "warning": f.warning,
                         "progress": self._progress.get(f.id) if f.status == IN_PROGRESS else None},
        }  # fmt: skip

    def _chunking(self) -> dict[str, Any]:
        """OpenAI's static strategy when chunks are measured in tokens; "other" for the default, in characters."""
        if self.settings.chunk_unit != "tokens":
            return {"type": "other"}
        return {"type": "static", "static": {"max_chunk_size_tokens": self.settings.chunk_size,
                                             "chunk_overlap_tokens": self.settings.chunk_overlap}}

    def close(self) -> None:
        BackgroundIngest.close(self)
        StoreSearch.close(self)


def file_counts_of(files: List[dict[str, Any]]) -> dict[str, int]:
    return file_counts([FileEntry("", "", "", 0, 0, status=f["status"]) for f in files])


def _document_object(collection: str, rec: DocRecord, chunking: dict[str, Any]) -> dict[str, Any]:
    """A document that was not attached through this API (the `ingest` CLI, /v1/kb), as a vector_store.file: in
    progress until every chunk has its vector (it answers searches before, from its keyword phase on)."""
    status = COMPLETED if rec.n_chunks and rec.embedded >= rec.n_chunks else IN_PROGRESS
    return {
        "id": rec.doc_id, "object": "vector_store.file", "created_at": int(rec.updated_at), "usage_bytes": rec.chars,
        "vector_store_id": store_id(collection), "status": status, "last_error": None, "attributes": None,
        "chunking_strategy": chunking,
        "kongming": {"filename": source_name(rec.source), "title": rec.title, "chunks": rec.n_chunks,
                     "documents": [rec.doc_id], "searchable": bool(rec.n_chunks),
                     "progress": None if status == COMPLETED else
                     {"stage": "embedding", "done": rec.embedded, "total": rec.n_chunks}},
    }  # fmt: skip


def _check_metadata(metadata: dict[str, Any] | None, param: str = "metadata") -> None:
    """OpenAI's limits: at most 16 pairs, keys up to 64 characters, string values up to 512 (metadata: strings
    only; attributes: numbers and booleans too)."""
    if metadata is None:
        return
    if len(metadata) > MAX_METADATA:
        raise BadRequest(f"{param} has {len(metadata)} keys: at most {MAX_METADATA}", param=param)
    kinds = (str,) if param == "metadata" else (str, int, float, bool)
    for k, v in metadata.items():
        if not isinstance(v, kinds) or len(k) > 64 or (isinstance(v, str) and len(v) > 512):
            raise BadRequest(f"{param} keys are strings of at most 64 characters, values strings of at most 512"
                             + ("" if param == "metadata" else ", numbers or booleans"), param=param)


__all__ = ["PREFIX", "VectorStoreService", "store_id"]
