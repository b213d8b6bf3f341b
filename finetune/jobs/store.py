"""Job, event and file records in one SQLite database under the data folder, shared by the API and the workers.

Why SQLite (stdlib sqlite3, WAL): the records are small, written by one API process and one worker per machine at a
time, and must survive restarts next to the data they describe; WAL lets readers (the API polling events) run while
a worker writes, and `BEGIN IMMEDIATE` makes claiming the next queued job atomic between several workers and API
replicas sharing the folder. A job-queue library (huey, rq, celery) would add a broker or a second store for what
three tables and one UPDATE do. SQLite needs a local file system: for workers on other hosts, share a local disk
through one host or move these tables to a database server (docs/jobs.md).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.jobs.db import Database

DB_FILE = "jobs.sqlite3"
ACTIVE = ("validating_files", "queued", "running")
FINAL = ("succeeded", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, filename TEXT NOT NULL, purpose TEXT NOT NULL,
    bytes INTEGER NOT NULL, created_at INTEGER NOT NULL, status TEXT NOT NULL, status_details TEXT,
    details TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, created_at INTEGER NOT NULL, status TEXT NOT NULL,
    request TEXT NOT NULL, fine_tuned_model TEXT, finished_at INTEGER, trained_tokens INTEGER, error TEXT,
    result_files TEXT NOT NULL DEFAULT '[]', estimated_finish INTEGER, cancel_requested INTEGER NOT NULL DEFAULT 0,
    worker TEXT, heartbeat REAL, trainer_pid INTEGER);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, created_at INTEGER NOT NULL, level TEXT NOT NULL,
    message TEXT NOT NULL, type TEXT NOT NULL, data TEXT);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id, seq);
"""


def new_id(prefix: str) -> str:
    """`prefix-` and 24 random letters and digits, as OpenAI's ids look (file-..., ftjob-...)."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return f"{prefix}-" + "".join(secrets.choice(alphabet) for _ in range(24))


@dataclass
class FileRecord:
    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    status: str = "processed"
    status_details: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # format, records, problems (line, index, message)


@dataclass
class JobRecord:
    id: str
    created_at: int
    status: str
    request: dict[str, Any]  # the checked job request: model, base, files, hyperparameters, kongming extension
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    trained_tokens: int | None = None
    error: dict[str, Any] | None = None  # {code, message, param}
    result_files: list[str] = field(default_factory=list)
    estimated_finish: int | None = None
    cancel_requested: bool = False
    worker: str | None = None  # "host:pid" of the worker running it
    heartbeat: float | None = None
    trainer_pid: int | None = None


@dataclass
class EventRecord:
    seq: int
    job_id: str
    created_at: int
    level: str
    message: str
    type: str
    data: dict[str, Any] | None

    @property
    def id(self) -> str:
        return f"ftevent-{self.seq}"


def _loads(text: str | None) -> Any:
    return json.loads(text) if text else None


class JobStore:
    """The three tables. Every method opens its own short connection: safe from any thread or process."""

    def __init__(self, data_dir: str | Path) -> None:
        self.root = Path(data_dir) / "finetune"
        self.path = self.root / DB_FILE
        # NORMAL: a step's events may be lost on a power cut (never on a crash); the worker writes a few rows a step
        self._db = Database(self.path, _SCHEMA, synchronous="NORMAL").transaction

    # -- files -------------------------------------------------------------------------------------------------
    def add_file(self, f: FileRecord) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO files (id, filename, purpose, bytes, created_at, status, status_details, details) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (f.id, f.filename, f.purpose, f.bytes, f.created_at, f.status, f.status_details,
                 json.dumps(f.details, ensure_ascii=False)),
            )  # fmt: skip

    def _file(self, row: tuple[Any, ...]) -> FileRecord:
        return FileRecord(row[0], row[1], row[2], row[3], row[4], row[5], row[6], _loads(row[7]) or {})

    _FILE_COLS = "id, filename, purpose, bytes, created_at, status, status_details, details"

    def get_file(self, file_id: str) -> FileRecord | None:
        with self._db() as db:
            row = db.execute(f"SELECT {self._FILE_COLS} FROM files WHERE id = ?", (file_id,)).fetchone()
        return self._file(row) if row else None

    def list_files(
        self, purpose: str | None = None, after: str | None = None, limit: int = 10000, order: str = "desc"
    ) -> tuple[list[FileRecord], bool]:
        """(files, has_more): newest first (`order` desc) or oldest first, starting after the file `after`."""
        op, direction = ("<", "DESC") if order == "desc" else (">", "ASC")
        where, args = ["1=1"], []
        if purpose:
            where.append("purpose = ?")
            args.append(purpose)
        if after:
            where.append(f"seq {op} COALESCE((SELECT seq FROM files WHERE id = ?), -1)")
            args.append(after)
        with self._db() as db:
            rows = db.execute(
                f"SELECT {self._FILE_COLS} FROM files WHERE {' AND '.join(where)} ORDER BY seq {direction} LIMIT ?",
                (*args, limit + 1),
            ).fetchall()
        return [self._file(r) for r in rows[:limit]], len(rows) > limit

    def delete_file(self, file_id: str) -> bool:
        with self._db() as db:
            return db.execute("DELETE FROM files WHERE id = ?", (file_id,)).rowcount > 0

    # -- jobs --------------------------------------------------------------------------------------------------
    _JOB_COLS = ("id, created_at, status, request, fine_tuned_model, finished_at, trained_tokens, error, result_files, "
                 "estimated_finish, cancel_requested, worker, heartbeat, trainer_pid")  # fmt: skip
    _JSON = frozenset({"request", "error", "result_files"})

    def _job(self, row: tuple[Any, ...]) -> JobRecord:
        j = JobRecord(*row)
        j.request, j.error, j.result_files = _loads(row[3]) or {}, _loads(row[7]), _loads(row[8]) or []
        j.cancel_requested = bool(j.cancel_requested)
        return j

    def add_job(self, job: JobRecord) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO jobs (id, created_at, status, request) VALUES (?, ?, ?, ?)",
                (job.id, job.created_at, job.status, json.dumps(job.request, ensure_ascii=False)),
            )

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._db() as db:
            row = db.execute(f"SELECT {self._JOB_COLS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._job(row) if row else None

    def list_jobs(self, after: str | None = None, limit: int = 20) -> tuple[list[JobRecord], bool]:
        """(jobs, has_more), newest first, starting after the job `after`."""
        where = "seq < COALESCE((SELECT seq FROM jobs WHERE id = ?), -1)" if after else "1=1"
        with self._db() as db:
            rows = db.execute(f"SELECT {self._JOB_COLS} FROM jobs WHERE {where} ORDER BY seq DESC LIMIT ?",
                              (*([after] if after else []), limit + 1)).fetchall()  # fmt: skip
        return [self._job(r) for r in rows[:limit]], len(rows) > limit

    def update_job(self, job_id: str, *, only_if: tuple[str, ...] = (), **fields: Any) -> bool:
        """Set columns of a job (JSON columns given as Python values); with `only_if`, only while its status is
        one of those. True when the job was updated."""
        cols = [f"{k} = ?" for k in fields]
        vals = [json.dumps(v, ensure_ascii=False) if k in self._JSON else v for k, v in fields.items()]
        cond = f" AND status IN ({','.join('?' * len(only_if))})" if only_if else ""
        with self._db(immediate=True) as db:
            cur = db.execute(f"UPDATE jobs SET {', '.join(cols)} WHERE id = ?{cond}", (*vals, job_id, *only_if))
            return cur.rowcount > 0

    def claim_next(self, worker: str) -> JobRecord | None:
        """Atomically take the oldest queued job for `worker` (it becomes running), or None."""
        with self._db(immediate=True) as db:
            row = db.execute("SELECT id FROM jobs WHERE status = 'queued' AND cancel_requested = 0 "
                             "ORDER BY seq LIMIT 1").fetchone()  # fmt: skip
            if row is None:
                return None
            db.execute("UPDATE jobs SET status = 'running', worker = ?, heartbeat = ? WHERE id = ?",
                       (worker, time.time(), row[0]))  # fmt: skip
        return self.get_job(row[0])

    def jobs_with_status(self, *statuses: str) -> list[JobRecord]:
        with self._db() as db:
            rows = db.execute(f"SELECT {self._JOB_COLS} FROM jobs WHERE status IN ({','.join('?' * len(statuses))}) "
                              "ORDER BY seq", statuses).fetchall()  # fmt: skip
        return [self._job(r) for r in rows]

    # -- events ------------------------------------------------------------------------------------------------
    def add_event(
        self, job_id: str, message: str, *, level: str = "info", type: str = "message", data: Any = None
    ) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO events (job_id, created_at, level, message, type, data) VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, int(time.time()), level, message, type,
                 None if data is None else json.dumps(data, ensure_ascii=False)),
            )  # fmt: skip

    def list_events(self, job_id: str, after: str | None = None, limit: int = 20) -> tuple[list[EventRecord], bool]:
        """(events, has_more), newest first as OpenAI lists them, starting after the event `after`."""
        where = "job_id = ?"
        args: list[Any] = [job_id]
        if after:
            seq = after.removeprefix("ftevent-")
            where += " AND seq < ?"
            args.append(int(seq) if seq.isdigit() else -1)
        with self._db() as db:
            rows = db.execute(f"SELECT seq, job_id, created_at, level, message, type, data FROM events WHERE {where} "
                              "ORDER BY seq DESC LIMIT ?", (*args, limit + 1)).fetchall()  # fmt: skip
        return [EventRecord(r[0], r[1], r[2], r[3], r[4], r[5], _loads(r[6])) for r in rows[:limit]], len(rows) > limit


def worker_name() -> str:
    return f"{os.uname().nodename}:{os.getpid()}"


def now() -> int:
    return int(time.time())
