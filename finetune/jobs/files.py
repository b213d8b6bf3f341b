"""Uploaded files: blobs under data/finetune/files, metadata in the job store; fine-tune data checked on upload."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.jobs.store import FileRecord, JobStore, new_id, now
from ingest.fsio import atomic_open

PURPOSES = ("fine-tune", "fine-tune-results", "assistants")  # assistants: documents for vector stores
MAX_PROBLEMS = 1000  # bad lines kept in a file's record (all are counted)
SHOWN = 5  # bad lines named in status_details and in a refusal's message


@dataclass
class FileRejected(Exception):
    """An upload that cannot be used: the message says why; `problems` are the bad lines ({line, index, message})."""

    message: str
    param: str = "file"
    problems: list[dict[str, Any]] = field(default_factory=list)

    def __str__(self) -> str:
        return self.message


def _problem_lines(problems: list[dict[str, Any]]) -> str:
    shown = "; ".join(f"line {p['line']}: {p['message']}" for p in problems[:SHOWN])
    more = f"; and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
    return shown + more


def check_dataset(path: Path, name: str) -> dict[str, Any]:
    """Read a data file with finetune's readers (OpenAI messages, Alpaca, ShareGPT; JSONL or a JSON array).

    Returns {format, records, skipped, problems: [{line, index, message}]}; FileRejected when no record is valid."""
    from finetune.data.formats import read_with_format
    from finetune.data.jsonfile import DataError

    try:
        convs, problems, fmt = read_with_format(path)
    except (DataError, UnicodeDecodeError, ValueError) as exc:
        why = str(exc).replace(str(path), name).replace("; name it with --from", "")  # (a CLI option: not here)
        why = why.removeprefix(f"{name}: ")  # (the readers' messages may start with the file's name already)
        raise FileRejected(f"{name}: {why}") from None
    found = [{"line": p.line, "index": p.index, "message": p.message} for p in problems]
    if not convs:
        lines = f": {_problem_lines(found)}" if found else ""
        raise FileRejected(f"{name}: no valid {fmt} record (expected OpenAI messages, Alpaca or ShareGPT "
                           f"records, one JSON object a line){lines}", problems=found[:MAX_PROBLEMS])  # fmt: skip
    systems = {c.system for c in convs}
    return {
        "format": fmt,
        "records": len(convs),
        "skipped": len(found),
        "problems": found[:MAX_PROBLEMS],
        "system_prompt": systems.pop() if len(systems) == 1 else None,  # one shared by all records, if any
    }


def check_document(path: Path, name: str) -> dict[str, Any]:
    """Read a document with ingest's readers (.txt .md .html .pdf .docx .jsonl), as a vector store will.

    Returns {format, documents, chars}; FileRejected when its type is not supported or no text can be read."""
    import os
    import tempfile

    from ingest.errors import UnreadableFileError
    from ingest.loaders import SUPPORTED, load_file

    suffix = Path(name).suffix.lower()
    if suffix not in SUPPORTED:
        raise FileRejected(f"{name}: unsupported file type {suffix or '(none)'}: upload one of "
                           f"{', '.join(sorted(SUPPORTED))}")  # fmt: skip
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".check-") as tmp:  # same disk: a link
        named = Path(tmp) / f"document{suffix}"  # the readers go by the suffix; the blob has none
        os.link(path, named)
        try:
            docs, _ = load_file(named)
        except UnreadableFileError as exc:
            raise FileRejected(f"{name}: {exc.reason}") from None
    return {"format": suffix.lstrip("."), "documents": len(docs), "chars": sum(len(d.text) for d in docs)}


class FileStore:
    """The files of the Files API: `data_dir/finetune/files/<id>` plus a row in the job store."""

    def __init__(self, data_dir: str | Path, store: JobStore | None = None) -> None:
        self.store = store or JobStore(data_dir)
        self.root = Path(data_dir) / "finetune" / "files"

    def path(self, file_id: str) -> Path:
        return self.root / file_id

    def create(self, data: bytes, filename: str, purpose: str) -> FileRecord:
        """Store an upload. A fine-tune file must hold at least one valid record (FileRejected otherwise); its bad
        lines are reported in `details["problems"]` and counted in `status_details`."""
        if purpose not in (PURPOSES[0], PURPOSES[2]):
            raise FileRejected(f"purpose {purpose!r} is not supported here: upload training data with purpose "
                               "'fine-tune', documents for vector stores with 'assistants'",
                               param="purpose")  # fmt: skip
        file_id = new_id("file")
        target = self.path(file_id)
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_open(target, "wb", perm=0o600) as out:
            out.write(data)
        try:
            details = check_dataset(target, filename) if purpose == PURPOSES[0] else check_document(target, filename)
        except FileRejected:
            target.unlink(missing_ok=True)
            raise
        note = None
        if details.get("skipped"):
            note = (f"{details['records']} valid {details['format']} records; {details['skipped']} bad lines "
                    f"skipped: {_problem_lines(details['problems'])}")  # fmt: skip
        record = FileRecord(file_id, filename, purpose, len(data), now(), "processed", note, details)
        self.store.add_file(record)
        return record

    def add_result(self, src: Path, filename: str, job_id: str) -> FileRecord:
        """Copy a job's output (metrics CSV, loss curve, evaluation) in as a `fine-tune-results` file."""
        file_id = new_id("file")
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, self.path(file_id))
        record = FileRecord(file_id, filename, "fine-tune-results", self.path(file_id).stat().st_size, now(),
                            "processed", None, {"job_id": job_id})  # fmt: skip
        self.store.add_file(record)
        return record

    def delete(self, file_id: str) -> bool:
        gone = self.store.delete_file(file_id)
        self.path(file_id).unlink(missing_ok=True)
        return gone
