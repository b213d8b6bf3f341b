"""/v1/files: OpenAI's Files API for fine-tuning data (checked on upload) and jobs' result files; needs an API key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import FileResponse

from finetune.jobs.files import FileRejected, FileStore

from ..errors import BadRequest, NotFound, PayloadTooLarge
from ..fine_tuning import FileDeleted, FileObject, ListPage
from ..uploads import MAX_NAME_BYTES
from .deps import KbKey, Settings

router = APIRouter(prefix="/v1/files", tags=["files"])
MEDIA = {".png": "image/png", ".csv": "text/csv", ".json": "application/json", ".jsonl": "application/jsonl"}


def _files(settings: Settings) -> FileStore:
    return FileStore(settings.data_dir)


def _found(files: FileStore, file_id: str) -> FileObject:
    record = files.store.get_file(file_id)
    if record is None:
        raise NotFound(f"No such File object: {file_id}", param="id", code="file_not_found")
    return FileObject.of(record)


@router.post("", dependencies=[KbKey])
def create_file(settings: Settings, file: Annotated[UploadFile, File()], purpose: Annotated[str, Form()]) -> FileObject:
    """Upload a file (multipart: `file`, `purpose` "fine-tune" or "assistants"). Fine-tune records are read with
    finetune's readers (OpenAI messages, Alpaca, ShareGPT; JSONL or a JSON array): bad lines are listed in
    `kongming.problems` with their numbers and counted in `status_details`; a file with no valid record is a 400.
    An "assistants" document (for vector stores) is read with ingest's readers: an unsupported or unreadable one
    is a 400."""
    data = file.file.read(settings.max_file_bytes + 1)
    if len(data) > settings.max_file_bytes:
        raise PayloadTooLarge(f"file too large: the limit is {settings.max_file_bytes} bytes (max_file_bytes)",
                              param="file")  # fmt: skip
    name = shortened((file.filename or "upload.jsonl").replace("/", "_").replace("\\", "_"))
    try:
        record = _files(settings).create(data, name, purpose)
    except FileRejected as exc:  # a bad purpose is a bad field (code null, as OpenAI's); a bad file, invalid_file
        code = None if exc.param == "purpose" else "invalid_file"
        raise BadRequest(exc.message, param=exc.param, code=code) from None
    return FileObject.of(record)


def shortened(name: str, limit: int = MAX_NAME_BYTES) -> str:
    """A file name cut to `limit` UTF-8 bytes, keeping its extension (what says how it is read)."""
    if len(name.encode("utf-8", "surrogatepass")) <= limit:
        return name
    stem, dot, ext = name.rpartition(".")
    suffix = dot + ext if dot and stem and len(ext) <= 16 else ""
    body = name[: len(name) - len(suffix)]
    while body and len((body + suffix).encode("utf-8", "surrogatepass")) > limit:
        body = body[:-1]
    return body + suffix


@router.get("", dependencies=[KbKey])
def list_files(
    settings: Settings,
    purpose: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
) -> ListPage:
    records, more = _files(settings).store.list_files(purpose, after, limit, order)
    return ListPage.of([FileObject.of(r) for r in records], more)


@router.get("/{file_id}", dependencies=[KbKey])
def get_file(file_id: str, settings: Settings) -> FileObject:
    return _found(_files(settings), file_id)


@router.get("/{file_id}/content", dependencies=[KbKey])
def file_content(file_id: str, settings: Settings) -> FileResponse:
    files = _files(settings)
    record = _found(files, file_id)
    suffix = "." + record.filename.rsplit(".", 1)[-1] if "." in record.filename else ""
    return FileResponse(files.path(file_id), media_type=MEDIA.get(suffix, "application/octet-stream"),
                        filename=record.filename)  # fmt: skip


@router.delete("/{file_id}", dependencies=[KbKey])
def delete_file(file_id: str, settings: Settings) -> FileDeleted:
    files = _files(settings)
    _found(files, file_id)
    if not files.delete(file_id):
        raise NotFound(f"No such File object: {file_id}", param="id", code="file_not_found")
    return FileDeleted(id=file_id)
