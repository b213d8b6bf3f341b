"""What a vector store knows beyond Chroma: each store's name, metadata and times, and each attached file's status,
error and documents, in one JSON file (`DATA_DIR/vector_stores/registry.json`, written atomically)."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ingest.fsio import write_text_atomic

log = logging.getLogger(__name__)
IN_PROGRESS, COMPLETED, FAILED, CANCELLED = "in_progress", "completed", "failed", "cancelled"
STATUSES = (IN_PROGRESS, COMPLETED, FAILED, CANCELLED)


@dataclass
class StoreEntry:
    """A vector store created through the API (collections made by `ingest` have none until they are named)."""

    collection: str
    name: str | None  # None: created without a name (OpenAI's `name: null`)
    created_at: int
    metadata: dict[str, str] = field(default_factory=dict)
    last_active_at: int | None = None


@dataclass
class FileEntry:
    """A file attached to a store: its ingest status and the knowledge-base documents it became."""

    id: str
    collection: str
    filename: str
    created_at: int
    usage_bytes: int
    status: str = IN_PROGRESS
    last_error: dict[str, str] | None = None
    doc_ids: list[str] = field(default_factory=list)
    chunks: int = 0
    attributes: dict[str, Any] = field(default_factory=dict)
    warning: str | None = None  # ingested, with a note (the same text as another document: both kept)


@dataclass
class BatchEntry:
    """A file batch: files attached together, followed as one (OpenAI's vector_store.files_batch)."""

    id: str
    collection: str
    created_at: int
    file_ids: list[str] = field(default_factory=list)
    cancelled: bool = False


def now() -> int:
    return int(time.time())


class Registry:
    """Stores and files by id; every change is written through at once. Thread-safe (one lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.RLock()
        self.stores: dict[str, StoreEntry] = {}
        self.files: dict[str, FileEntry] = {}
        self.batches: dict[str, BatchEntry] = {}
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                self.stores = {k: StoreEntry(**v) for k, v in data.get("stores", {}).items()}
                self.files = {k: FileEntry(**v) for k, v in data.get("files", {}).items()}
                self.batches = {k: BatchEntry(**v) for k, v in data.get("batches", {}).items()}
            except (OSError, ValueError, TypeError, AttributeError) as exc:
                # the service starts (the collections are still stores, without their names); the file is kept
                aside = path.with_name(f"{path.name}.unreadable-{now()}")
                log.error("cannot read %s (%s): moved to %s, starting with no store names", path, exc, aside.name)
                path.rename(aside)
                self.stores, self.files, self.batches = {}, {}, {}

    def save(self) -> None:
        with self.lock:
            data = {"stores": {k: asdict(v) for k, v in self.stores.items()},
                    "files": {k: asdict(v) for k, v in self.files.items()},
                    "batches": {k: asdict(v) for k, v in self.batches.items()}}
            write_text_atomic(self.path, json.dumps(data, ensure_ascii=False, indent=1), perm=0o600)

    def files_of(self, collection: str) -> list[FileEntry]:
        with self.lock:
            return [f for f in self.files.values() if f.collection == collection]

    def update_file(self, file_id: str, **changes: Any) -> FileEntry | None:
        """Change a file's fields and save; None when it was deleted meanwhile."""
        with self.lock:
            entry = self.files.get(file_id)
            if entry is None:
                return None
            for k, v in changes.items():
                setattr(entry, k, v)
            self.save()
            return entry

    def touch(self, collection: str) -> None:
        with self.lock:
            entry = self.stores.get(collection)
            if entry is not None:
                entry.last_active_at = now()
                self.save()


def file_counts(files: list[FileEntry]) -> dict[str, int]:
    """OpenAI's `file_counts`: files by status, and the total."""
    counts = {s: 0 for s in STATUSES}
    for f in files:
        counts[f.status] = counts.get(f.status, 0) + 1
    return {**counts, "total": len(files)}
