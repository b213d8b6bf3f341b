"""File batches (OpenAI's vector_store.files_batch): files attached together and followed as one, cancellable
while queued. Each file is attached with VectorStoreService.add_file; a batch only groups them."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from ..errors import NotFound
from .registry import CANCELLED, IN_PROGRESS, BatchEntry, file_counts, now

if TYPE_CHECKING:
    from .service import VectorStoreService


def create_batch(stores: VectorStoreService, store_id: str, file_ids: list[str]) -> dict[str, Any]:
    """Group files already attached to the store (add_file) as a batch: its vector_store.files_batch object."""
    collection = stores.collection_of(store_id)
    batch = BatchEntry("vsfb_" + secrets.token_hex(12), collection, now(), list(file_ids))
    with stores.registry.lock:
        stores.registry.batches[batch.id] = batch
        stores.registry.save()
    return batch_object(stores, store_id, batch.id)


def _batch(stores: VectorStoreService, store_id: str, batch_id: str) -> BatchEntry:
    batch = stores.registry.batches.get(batch_id)
    if batch is None or batch.collection != stores.collection_of(store_id):
        raise NotFound(f"No file batch found with id '{batch_id}' in vector store '{store_id}'", param="batch_id",
                       code="batch_not_found")
    return batch


def batch_files(stores: VectorStoreService, store_id: str, batch_id: str) -> list[dict[str, Any]]:
    """The batch's vector_store.file objects that are still attached, newest first."""
    ids = set(_batch(stores, store_id, batch_id).file_ids)
    return [f for f in stores.list_files(store_id) if f["id"] in ids]


def batch_object(stores: VectorStoreService, store_id: str, batch_id: str) -> dict[str, Any]:
    """`{id, object: "vector_store.files_batch", created_at, vector_store_id, status, file_counts}`: in_progress while
    a file of it is, then completed (cancelled when it was cancelled)."""
    batch = _batch(stores, store_id, batch_id)
    files = batch_files(stores, store_id, batch_id)
    counts = file_counts([stores.registry.files[f["id"]] for f in files if f["id"] in stores.registry.files])
    status = IN_PROGRESS if counts[IN_PROGRESS] else CANCELLED if batch.cancelled else "completed"
    return {"id": batch.id, "object": "vector_store.files_batch", "created_at": batch.created_at,
            "vector_store_id": store_id, "status": status, "file_counts": counts}  # fmt: skip


def cancel_batch(stores: VectorStoreService, store_id: str, batch_id: str) -> dict[str, Any]:
    """Cancel the batch's files that are still waiting for their ingest (one that runs finishes)."""
    batch = _batch(stores, store_id, batch_id)
    with stores.registry.lock:
        batch.cancelled = True
        for file_id in batch.file_ids:
            entry = stores.registry.files.get(file_id)
            if entry is not None and entry.status == IN_PROGRESS and stores.progress_stage(file_id) == "queued":
                entry.status = CANCELLED
        stores.registry.save()
    return batch_object(stores, store_id, batch_id)
