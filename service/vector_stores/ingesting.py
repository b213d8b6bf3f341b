"""The service's writes into its knowledge bases, on one background thread: a file or an upload is chunked and
keyword-indexed first (it answers keyword and hybrid searches from then on), then embedded in the background, where
each batch gives way to the next upload or delete; at start, what a crash or `ingest add --no-embed` left unembedded
is embedded the same way."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from ingest.embedding import Embedder
from ingest.errors import IngestError, StoreError
from ingest.kb import open_store, unembedded_ids
from ingest.settings import IngestSettings
from ingest.store import DocRecord, list_collections, make_client

from ..errors import without_paths
from .registry import COMPLETED, FAILED, IN_PROGRESS, Registry
from .worker import IngestQueue, WriteLock

log = logging.getLogger(__name__)
# Passages embedded per call during an ingest: the embedder runs one call at a time, so a search's query waits for
# the batch in hand; 32 passages held searches 20-44 s on a busy 2-core machine, 4 keep the wait to one small batch
INGEST_BATCH = 4
# Vectors written per store write in the background: each write makes them count in searches and in the documents'
# embedded counts (ingest's 256 left a novel's progress at 0 for minutes, and a 50-chunk file at 0 to its end)
INGEST_FLUSH = 32
EMBEDDING = ("embedding", "indexing")  # a file's stages once it is keyword-searchable


def load_libraries() -> None:
    """Import LlamaIndex's core whole, before any of its submodules, in every thread that reaches it (the writer
    thread, and a request's first search). Imported lazily from two threads at once, one importing
    `llama_index.core` while the other imported `llama_index.core.vector_stores.types` first, the two took the
    package's module locks in opposite orders: `_DeadlockError` killed the first embedding after a start."""
    import llama_index.core  # noqa: F401  (the whole package under its own lock: a second thread waits, holding none)


class BackgroundIngest:
    """Ingest jobs and embedding passes per collection, on one thread (IngestQueue); a collection's writes hold
    its WriteLock, and an embedding pass lets a waiting writer in at its next batch. `_progress` says where each
    attached file is (VectorStoreService.progress); `jobs` holds each file's keyword phase."""

    settings: IngestSettings
    embedder: Embedder | None
    registry: Registry
    root: Path

    def __init__(self) -> None:
        self._queue = IngestQueue()
        self._locks: dict[str, WriteLock] = {}
        self._progress: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, Future[None]] = {}  # file id -> its keyword phase (wait() waits for the embedding too)

    def _lock(self, collection: str) -> WriteLock:
        with self.registry.lock:
            return self._locks.setdefault(collection, WriteLock())

    # --- uploads that are not attached files (/v1/kb/documents) ----------------------------------------------------
    def add_documents(self, collection: str, paths: Sequence[Path], confine: Path | None = None) -> Future[Any]:
        """Ingest files into a collection: the Future's result is ingest's IngestSummary once the keyword phase
        is done (the documents are searchable); their embedding goes on in the background."""
        return self._queue.submit(self._add_documents, collection, list(paths), confine)

    def _add_documents(self, collection: str, paths: list[Path], confine: Path | None) -> Any:
        from ingest.pipeline import add_paths

        load_libraries()
        with self._lock(collection):
            summary = add_paths(paths, self.settings, collection, embedder=self.embedder, confine=confine, embed=False)
        if summary.chunks_unembedded:
            self.embed_later(collection)
        return summary

    def remove_documents(self, collection: str, targets: Sequence[str]) -> Any:
        """ingest's remove_documents, in turn with the collection's other writes (an embedding pass gives way)."""
        from ingest.pipeline import remove_documents

        load_libraries()
        with self._lock(collection):
            return remove_documents(list(targets), self.settings, collection)

    # --- attached files ----------------------------------------------------------------------------------------
    def _enqueue(self, collection: str, file_id: str, path: Path) -> None:
        self._progress[file_id] = {"stage": "queued", "done": 0, "total": 0}
        self.jobs[file_id] = self._queue.submit(self._ingest, collection, file_id, path)

    def _ingest(self, collection: str, file_id: str, path: Path) -> None:
        """The keyword phase of an attached file; its status stays in_progress until its embedding is done."""
        from ingest.pipeline import add_paths

        load_libraries()
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
                summary = add_paths([path], self.settings, collection, embedder=self.embedder, confine=path.parent,
                                    embed=False)
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
            # its documents now: a search hit names the file from here on
            self.registry.update_file(file_id, doc_ids=sorted(r.doc_id for r in mine),
                                      chunks=sum(r.n_chunks for r in mine),
                                      warning=without_paths(summary.warnings[0].reason) if summary.warnings else None)
            if not summary.chunks_unembedded:  # unchanged, or every chunk's vector known already
                self.registry.update_file(file_id, status=COMPLETED)
                self._progress.pop(file_id, None)
                return
            self._progress[file_id] = {"stage": "embedding", "done": 0, "total": summary.chunks_unembedded}
        self.embed_later(collection)

    def _failed(self, file_id: str, code: str, message: str) -> None:
        self.registry.update_file(file_id, status=FAILED, last_error={"code": code, "message": without_paths(message)})
        self._progress.pop(file_id, None)

    # --- embedding in the background -------------------------------------------------------------------------
    def embed_later(self, collection: str) -> None:
        """Embed the collection's unembedded chunks on the background thread, when no ingest job waits."""
        lock = self._lock(collection)
        self._queue.embed_later(collection, functools.partial(self._embed_pass, collection),
                                wait_for=lambda: lock.waiting > 0)

    def _embed_pass(self, collection: str, give_way: Callable[[], None]) -> None:
        from ingest.pipeline import embed_pending

        load_libraries()
        settings = self.settings.model_copy(update={"embed_batch_size": INGEST_BATCH, "embed_flush": INGEST_FLUSH})
        with self._lock(collection):
            if collection not in self._served():  # its store was deleted meanwhile: opening it would make it again
                return
            files = [f.id for f in self.registry.files_of(collection)
                     if f.status == IN_PROGRESS and self.progress_stage(f.id) in EMBEDDING]  # fmt: skip

            def report(done: int, total: int) -> None:  # after each batch: a search waiting for the embedder gets it
                time.sleep(0.005)  # (its lock is not fair: without a pause this thread takes it back at once)
                for f in files:
                    if f in self._progress:
                        self._progress[f] = {"stage": "embedding" if done < total else "indexing", "done": done,
                                             "total": total}
                give_way()  # a job or a delete waits: stop here (what is embedded is kept), and go on after it

            try:
                summary = embed_pending(settings, collection, embedder=self.embedder, on_progress=report)
            except IngestError as exc:  # (Preempted passes through: the queue runs the pass again later)
                log.error("embedding collection %s failed: %s", collection, exc)
                for f in files:
                    self._failed(f, "server_error", f"embedding failed ({exc}); the file answers keyword searches")
                return
            log.info("collection %s: %d chunks embedded in %.1f s, %d left", collection, summary.chunks_embedded,
                     summary.seconds, summary.chunks_unembedded)
            for f in files:
                if self.progress_stage(f) in EMBEDDING:  # (not deleted meanwhile)
                    self.registry.update_file(f, status=COMPLETED)
                    self._progress.pop(f, None)

    def resume(self) -> None:
        """At start, on the background thread: embed what an interrupted ingest or `ingest add --no-embed` left
        without a vector in any collection this service serves."""
        self._queue.submit(self._resume)

    def _served(self) -> list[str]:
        """The collections this service serves: each of its stores (the default one, even before it exists)."""
        return sorted({*list_collections(make_client(self.settings)), self.settings.collection})

    def _resume(self) -> None:
        load_libraries()
        for collection in self._served():
            left = len(unembedded_ids(open_store(self.settings, collection)))
            if left:
                log.info("collection %s has %d chunks without a vector (an interrupted ingest, or `ingest add "
                         "--no-embed`): embedding them in the background", collection, left)
                self.embed_later(collection)

    def progress_stage(self, file_id: str) -> str | None:
        """The stage of a file's running or queued ingest (None when none is)."""
        return (self._progress.get(file_id) or {}).get("stage")

    def wait(self, timeout: float | None = None) -> None:
        """Wait for every queued ingest and the embedding they left (tests; shutdown)."""
        for job in list(self.jobs.values()):
            job.result(timeout)
        if not self._queue.join(timeout):
            raise TimeoutError(f"the background embedding did not finish in {timeout} s")

    def close(self) -> None:
        self._queue.close()


def _inside(rec: DocRecord, folder: Path) -> bool:
    return Path(rec.source).is_relative_to(folder.resolve())
