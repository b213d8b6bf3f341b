"""Knowledge bases as OpenAI vector stores: a store is a Chroma collection (ingest's), a file is an upload ingested
into it in the background by ingest's pipeline; objects come back in OpenAI's shapes, without server paths."""

from __future__ import annotations

import logging
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from ingest.embedding import Embedder
from ingest.errors import IngestError, StoreError
from ingest.kb import drop_collection, open_store
from ingest.loaders import SUPPORTED
from ingest.settings import IngestSettings
from ingest.store import DocRecord, list_collections, make_client, validate_name

from ..answer.retrieval import source_name
from ..errors import BadRequest, NotFound, without_paths
from ..uploads import upload_target
from .registry import COMPLETED, FAILED, IN_PROGRESS, FileEntry, Registry, StoreEntry, file_counts, now
from .search import StoreSearch
from .worker import IngestQueue

log = logging.getLogger(__name__)
PREFIX = "vs_"  # a store's id is PREFIX + its collection name: the service's default collection is "vs_default"
MAX_METADATA = 16
# Passages embedded per call during an ingest: the embedder runs one call at a time, so a search's query waits for
# the batch in hand; 32 passages held searches 20-44 s on a busy 2-core machine, 4 keep the wait to one small batch
INGEST_BATCH = 4
List = list  # the class has a method named `list`


def store_id(collection: str) -> str:
    return PREFIX + collection


class VectorStoreService(StoreSearch):
    """Vector stores over the knowledge base's collections; built once per app (`app.state.vector_stores`).

    Thread-safe: files are ingested one at a time on a background thread; a store's writes (ingest, delete)
    hold that store's lock; reads run in the caller's thread. Every collection of the store (those made by the
    `ingest` CLI too) is a vector store, `vs_<collection>`; a document not attached through this API is listed as
    a file whose id is its document id. Errors are service errors (404 unknown store or file, 400 bad input)."""

    def __init__(self, settings: IngestSettings, data_dir: Path, embedder: Embedder | None = None) -> None:
        super().__init__(settings, embedder)
        self.root = data_dir / "vector_stores"
        self.registry = Registry(self.root / "registry.json")
        self._queue = IngestQueue()
        self._locks: dict[str, threading.RLock] = {}
        self._progress: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, Future[None]] = {}  # file id -> its ingest (tests and shutdown wait on them)
        for f in [f for f in self.registry.files.values() if f.status == IN_PROGRESS]:  # a stop interrupted them
            self._enqueue(f.collection, f.id, self.root / "files" / f.collection / f.id / f.filename)

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
        """Every store, newest first (those made by the `ingest` CLI, without a creation time, last by name)."""
        with self.registry.lock:  # (another thread may be creating one)
            made = {c: n for n, c in enumerate(self.registry.stores)}  # creation order, within a second too
        names = sorted(set(self._collections()) | set(made), key=lambda c: (-made.get(c, -1), c))
        return [self._store_object(c) for c in names]

    def retrieve(self, store_id: str) -> dict[str, Any]:
        """The vector_store object: id, name, created_at, usage_bytes, file_counts, status, metadata...; NotFound."""
        return self._store_object(self.collection_of(store_id))

    def modify(self, store_id: str, name: str | None = None, metadata: dict[str, str] | None = None) -> dict[str, Any]:
        """Rename a store and/or replace its metadata (OpenAI's POST /vector_stores/{id})."""
        _check_metadata(metadata)
        collection = self.collection_of(store_id)
        with self.registry.lock:
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
        if not valid or (name not in self.registry.stores and name not in self._collections()):
            raise NotFound(f"No vector store found with id '{store_id}'", param="vector_store_id",
                           code="vector_store_not_found")
        return name

    def _collections(self) -> List[str]:
        return sorted({*list_collections(make_client(self.settings)), self.settings.collection})

    def _store_object(self, collection: str) -> dict[str, Any]:
        entry = self.registry.stores.get(collection)
        files = self._file_objects(collection)
        counts = file_counts_of(files)
        return {
            "id": store_id(collection), "object": "vector_store", "name": entry.name if entry else collection,
            "created_at": entry.created_at if entry else self._first_record_time(collection),
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
        "in_progress"; ingest runs on a background thread, then the status is "completed", or "failed" with
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
        From "embedding" on, the file's chunks already answer keyword searches (ingest's two phases)."""
        f = self.retrieve_file(store_id, file_id)
        if f["status"] != IN_PROGRESS:
            chunks = f["kongming"]["chunks"]
            return {"stage": f["status"], "done": chunks, "total": chunks}
        return dict(self._progress.get(file_id) or {"stage": "queued", "done": 0, "total": 0})

    def progress_stage(self, file_id: str) -> str | None:
        """The stage of a file's running or queued ingest (None when none is)."""
        return (self._progress.get(file_id) or {}).get("stage")

    def _file_objects(self, collection: str) -> List[dict[str, Any]]:
        """Attached files, newest first, then the collection's other documents (the `ingest` CLI's, /v1/kb's)."""
        entries = self.registry.files_of(collection)
        owned = {d for f in entries for d in f.doc_ids}
        out = [self._file_object(f) for f in reversed(entries)]
        for rec in self.records(collection).values():
            if rec.doc_id not in owned and not _inside(rec, self.root / "files" / collection):
                out.append(_document_object(collection, rec))
        return out

    def _file_object(self, f: FileEntry) -> dict[str, Any]:
        return {
            "id": f.id, "object": "vector_store.file", "created_at": f.created_at, "usage_bytes": f.usage_bytes,
            "vector_store_id": store_id(f.collection), "status": f.status, "last_error": f.last_error,
            "attributes": f.attributes or None, "chunking_strategy": self._chunking(),
            "kongming": {"filename": f.filename, "chunks": f.chunks, "documents": list(f.doc_ids),
                         "progress": self._progress.get(f.id) if f.status == IN_PROGRESS else None},
        }  # fmt: skip

    def _chunking(self) -> dict[str, Any]:
        """OpenAI's static strategy when chunks are measured in tokens; "other" for the default, in characters."""
        if self.settings.chunk_unit != "tokens":
            return {"type": "other"}
        return {"type": "static", "static": {"max_chunk_size_tokens": self.settings.chunk_size,
                                             "chunk_overlap_tokens": self.settings.chunk_overlap}}

    # --- ingest (the background thread) -------------------------------------------------------------------------
    def _lock(self, collection: str) -> threading.RLock:
        with self.registry.lock:
            return self._locks.setdefault(collection, threading.RLock())

    def _enqueue(self, collection: str, file_id: str, path: Path) -> None:
        self._progress[file_id] = {"stage": "queued", "done": 0, "total": 0}
        self.jobs[file_id] = self._queue.submit(self._ingest, collection, file_id, path)

    def _ingest(self, collection: str, file_id: str, path: Path) -> None:
        from ingest.pipeline import add_paths

        with self._lock(collection):
            with self.registry.lock:  # from "reading" on, a delete waits for this ingest (delete_file)
                entry = self.registry.files.get(file_id)
                if entry is None or entry.status != IN_PROGRESS:  # deleted or cancelled while queued
                    return
                self._progress[file_id] = {"stage": "reading", "done": 0, "total": 0}
            if not path.is_file():  # (a file attached before a restart whose upload is gone)
                self._failed(file_id, "server_error", "the uploaded file is gone: attach it again")
                return
            try:
                settings = self.settings.model_copy(update={"embed_batch_size": INGEST_BATCH})
                summary = add_paths([path], settings, collection, embedder=self.embedder, confine=path.parent,
                                    on_progress=self._reporter(file_id), on_searchable=self._searchable(file_id))
            except IngestError as exc:
                self._failed(file_id, "server_error" if isinstance(exc, StoreError) else "invalid_file", str(exc))
                return
            except Exception as exc:  # never lost silently: the file says it failed, the log has the trace
                log.exception("ingest of vector store file %s failed", file_id)
                self._failed(file_id, "server_error", f"internal error while ingesting ({type(exc).__name__})")
                return
            if summary.failed:
                reason = summary.failed[0].reason
                code = "unsupported_file" if reason.startswith("unsupported file type") else "invalid_file"
                self._failed(file_id, code, f"{path.name}: {reason}")
                return
            mine = [r for r in open_store(self.settings, collection).records().values() if _inside(r, path.parent)]
            self.registry.update_file(file_id, status=COMPLETED, doc_ids=sorted(r.doc_id for r in mine),
                                      chunks=sum(r.n_chunks for r in mine))
            self._progress.pop(file_id, None)

    def _reporter(self, file_id: str) -> Callable[[int, int], None]:
        def report(done: int, total: int) -> None:  # after each batch: a search waiting for the embedder gets it
            time.sleep(0.005)  # (its lock is not fair: without a pause this thread takes it back at once)
            self._progress[file_id] = {"stage": "embedding" if done < total else "indexing", "done": done,
                                       "total": total}

        return report

    def _searchable(self, file_id: str) -> Callable[[Any], None]:
        def keyword_ready(summary: Any) -> None:  # chunked and keyword-indexed; embedding comes next
            total = int(getattr(summary, "chunks_added", 0) or 0)  # report() gives the exact count from its 1st batch
            self._progress[file_id] = {"stage": "embedding", "done": 0, "total": total}

        return keyword_ready

    def _failed(self, file_id: str, code: str, message: str) -> None:
        self.registry.update_file(file_id, status=FAILED, last_error={"code": code, "message": without_paths(message)})
        self._progress.pop(file_id, None)

    def wait(self, timeout: float | None = None) -> None:
        """Wait for every queued ingest (tests; shutdown)."""
        for job in list(self.jobs.values()):
            job.result(timeout)

    def close(self) -> None:
        self._queue.close()
        super().close()


def file_counts_of(files: List[dict[str, Any]]) -> dict[str, int]:
    return file_counts([FileEntry("", "", "", 0, 0, status=f["status"]) for f in files])


def _inside(rec: DocRecord, folder: Path) -> bool:
    return Path(rec.source).is_relative_to(folder.resolve())


def _document_object(collection: str, rec: DocRecord) -> dict[str, Any]:
    """A document that was not attached through this API (the `ingest` CLI, /v1/kb), as a vector_store.file."""
    status = COMPLETED if rec.n_chunks else IN_PROGRESS
    return {
        "id": rec.doc_id, "object": "vector_store.file", "created_at": int(rec.updated_at), "usage_bytes": rec.chars,
        "vector_store_id": store_id(collection), "status": status, "last_error": None, "attributes": None,
        "chunking_strategy": None,
        "kongming": {"filename": source_name(rec.source), "title": rec.title, "chunks": rec.n_chunks,
                     "documents": [rec.doc_id]},
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
