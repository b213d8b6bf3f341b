"""/v1/vector_stores: OpenAI's Vector Stores API over the knowledge bases (VectorStoreService), plus a chunk preview;
every call needs an API key, as /v1/kb does."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from finetune.jobs.files import FileStore

from ..errors import BadRequest, NotFound
from ..vector_stores import batches
from ..vector_stores.search import MAX_RESULTS
from .deps import KbKey, Settings, VectorStores

router = APIRouter(prefix="/v1/vector_stores", tags=["vector stores"], dependencies=[KbKey])
POLL_AFTER_MS = "200"  # openai's upload_and_poll / create_and_poll wait this long between polls (header)

Limit = Annotated[int, Query(ge=1, le=100)]
Order = Annotated[Literal["asc", "desc"], Query()]


class StoreCreate(BaseModel):
    """POST /v1/vector_stores. `chunking_strategy`, `expires_after` and `description` are accepted and ignored (the
    knowledge base's chunking settings apply; stores do not expire)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=256)
    file_ids: list[str] | None = Field(default=None, max_length=500)
    metadata: dict[str, str] | None = None
    chunking_strategy: dict[str, Any] | None = None
    expires_after: dict[str, Any] | None = None
    description: str | None = None


class StoreModify(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=256)
    metadata: dict[str, str] | None = None
    expires_after: dict[str, Any] | None = None


class FileAttach(BaseModel):
    """POST /v1/vector_stores/{id}/files: a file uploaded with purpose "assistants" (POST /v1/files)."""

    model_config = ConfigDict(extra="forbid")

    file_id: str = Field(min_length=1, max_length=64)
    attributes: dict[str, str | float | bool] | None = None
    chunking_strategy: dict[str, Any] | None = None


class SearchRequest(BaseModel):
    """POST /v1/vector_stores/{id}/search. A list of queries is searched as one text; `filters`, `ranking_options`
    and `rewrite_query` are refused when set (not supported here)."""

    model_config = ConfigDict(extra="forbid")

    query: str | list[str]
    max_num_results: int = Field(default=10, ge=1, le=MAX_RESULTS)
    filters: dict[str, Any] | None = None
    ranking_options: dict[str, Any] | None = None
    rewrite_query: bool | None = None


def page(items: list[dict[str, Any]], limit: int, order: str, after: str | None, before: str | None) -> dict[str, Any]:
    """OpenAI's cursor page over `items` (given newest first): `{object: "list", data, first_id, last_id, has_more}`."""
    items = items if order == "desc" else items[::-1]
    ids = [i["id"] for i in items]
    for cursor, name in ((after, "after"), (before, "before")):
        if cursor is not None and cursor not in ids:
            raise BadRequest(f"{name}: no object {cursor!r} in this list", param=name)
    if after is not None:
        items = items[ids.index(after) + 1 :]
        data = items[:limit]
    elif before is not None:
        items = items[: ids.index(before)]
        data = items[-limit:]  # the objects just before the cursor
    else:
        data = items[:limit]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": len(items) > len(data)}  # fmt: skip


@router.post("")
def create_store(body: StoreCreate, stores: VectorStores, settings: Settings) -> dict[str, Any]:
    files = FileStore(settings.data_dir)
    uploads = [_upload(files, f) for f in body.file_ids or []]  # every id is checked before the store is made
    store = stores.create(body.name, body.metadata)
    for file_id, filename, data in uploads:
        stores.add_file(store["id"], filename, data, file_id=file_id)
    return stores.retrieve(store["id"])


@router.get("")
def list_stores(
    stores: VectorStores, limit: Limit = 20, order: Order = "desc", after: str | None = None, before: str | None = None
) -> dict[str, Any]:
    return page(stores.list(), limit, order, after, before)


@router.get("/{store_id}")
def get_store(store_id: str, stores: VectorStores) -> dict[str, Any]:
    return stores.retrieve(store_id)


@router.post("/{store_id}")
def modify_store(store_id: str, body: StoreModify, stores: VectorStores) -> dict[str, Any]:
    return stores.modify(store_id, body.name, body.metadata)


@router.delete("/{store_id}")
def delete_store(store_id: str, stores: VectorStores) -> dict[str, Any]:
    return stores.delete(store_id)


@router.post("/{store_id}/files")
def attach_file(store_id: str, body: FileAttach, stores: VectorStores, settings: Settings) -> dict[str, Any]:
    """Attach a file uploaded with purpose "assistants": ingested in the background (poll the file's status)."""
    stores.collection_of(store_id)  # an unknown store is a 404 before the file is looked at
    file_id, filename, data = _upload(FileStore(settings.data_dir), body.file_id)
    return stores.add_file(store_id, filename, data, file_id=file_id, attributes=body.attributes)


@router.get("/{store_id}/files")
def list_files(
    store_id: str, stores: VectorStores, limit: Limit = 20, order: Order = "desc", after: str | None = None,
    before: str | None = None, filter: Literal["in_progress", "completed", "failed", "cancelled"] | None = None,
) -> dict[str, Any]:  # fmt: skip
    files = [f for f in stores.list_files(store_id) if filter is None or f["status"] == filter]
    return page(files, limit, order, after, before)


@router.get("/{store_id}/files/{file_id}")
def get_file(store_id: str, file_id: str, stores: VectorStores, response: Response) -> dict[str, Any]:
    found = stores.retrieve_file(store_id, file_id)
    if found["status"] == "in_progress":
        response.headers["openai-poll-after-ms"] = POLL_AFTER_MS
    return found


class FileUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    attributes: dict[str, str | float | bool] | None


@router.post("/{store_id}/files/{file_id}")
def update_file(store_id: str, file_id: str, body: FileUpdate, stores: VectorStores) -> dict[str, Any]:
    return stores.update_file(store_id, file_id, body.attributes)


@router.delete("/{store_id}/files/{file_id}")
def delete_file(store_id: str, file_id: str, stores: VectorStores) -> dict[str, Any]:
    return stores.delete_file(store_id, file_id)


class BatchFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file_id: str = Field(min_length=1, max_length=64)
    attributes: dict[str, str | float | bool] | None = None
    chunking_strategy: dict[str, Any] | None = None


class BatchCreate(BaseModel):
    """POST /v1/vector_stores/{id}/file_batches: `file_ids` (with the batch's `attributes`), or `files` each with
    its own; uploaded with purpose "assistants"."""

    model_config = ConfigDict(extra="forbid")

    file_ids: list[str] | None = Field(default=None, max_length=500)
    files: list[BatchFile] | None = Field(default=None, max_length=500)
    attributes: dict[str, str | float | bool] | None = None
    chunking_strategy: dict[str, Any] | None = None


@router.post("/{store_id}/file_batches")
def create_batch(store_id: str, body: BatchCreate, stores: VectorStores, settings: Settings) -> dict[str, Any]:
    stores.collection_of(store_id)
    wanted = [(i, body.attributes) for i in body.file_ids or []] + [(f.file_id, f.attributes) for f in body.files or []]
    if not wanted:
        raise BadRequest("give file_ids or files", param="file_ids")
    files = FileStore(settings.data_dir)
    uploads = [(*_upload(files, file_id), attributes) for file_id, attributes in wanted]  # all checked first
    for file_id, filename, data, attributes in uploads:
        stores.add_file(store_id, filename, data, file_id=file_id, attributes=attributes)
    return batches.create_batch(stores, store_id, [u[0] for u in uploads])


@router.get("/{store_id}/file_batches/{batch_id}")
def get_batch(store_id: str, batch_id: str, stores: VectorStores, response: Response) -> dict[str, Any]:
    found = batches.batch_object(stores, store_id, batch_id)
    if found["status"] == "in_progress":
        response.headers["openai-poll-after-ms"] = POLL_AFTER_MS
    return found


@router.post("/{store_id}/file_batches/{batch_id}/cancel")
def cancel_batch(store_id: str, batch_id: str, stores: VectorStores) -> dict[str, Any]:
    return batches.cancel_batch(stores, store_id, batch_id)


@router.get("/{store_id}/file_batches/{batch_id}/files")
def list_batch_files(
    store_id: str, batch_id: str, stores: VectorStores, limit: Limit = 20, order: Order = "desc",
    after: str | None = None, before: str | None = None,
    filter: Literal["in_progress", "completed", "failed", "cancelled"] | None = None,
) -> dict[str, Any]:  # fmt: skip
    files = [f for f in batches.batch_files(stores, store_id, batch_id) if filter is None or f["status"] == filter]
    return page(files, limit, order, after, before)


@router.get("/{store_id}/files/{file_id}/chunks")
def file_chunks(
    store_id: str, file_id: str, stores: VectorStores, limit: Annotated[int, Query(ge=1, le=200)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:  # fmt: skip
    """kongming: a file's chunks in reading order (index, text, chapter, chapter_title, document) and its ingest
    progress ({stage, done, total})."""
    data = stores.chunks(store_id, file_id, limit, offset)
    return {"object": "list", "data": data, "progress": stores.progress(store_id, file_id)}


@router.post("/{store_id}/search")
def search(store_id: str, body: SearchRequest, stores: VectorStores) -> dict[str, Any]:
    for name in ("filters", "ranking_options", "rewrite_query"):
        if getattr(body, name):
            raise BadRequest(f"{name} is not supported by this service's search", param=name)
    query = body.query if isinstance(body.query, str) else " ".join(body.query)
    hits = stores.search(store_id, query, body.max_num_results)
    return {"object": "vector_store.search_results.page", "search_query": [query], "data": hits, "has_more": False,
            "next_page": None}  # fmt: skip


def _upload(files: FileStore, file_id: str) -> tuple[str, str, bytes]:
    """(id, file name, bytes) of a Files API upload meant for vector stores; NotFound or BadRequest otherwise."""
    record = files.store.get_file(file_id)
    if record is None:
        raise NotFound(f"No such File object: {file_id}", param="file_id", code="file_not_found")
    if record.purpose != "assistants":
        raise BadRequest(f"file {file_id} was uploaded with purpose {record.purpose!r}: upload documents with "
                         "purpose 'assistants' to attach them to a vector store", param="file_id")  # fmt: skip
    return record.id, record.filename, files.path(file_id).read_bytes()
