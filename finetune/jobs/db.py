"""The fine-tuning SQLite files (jobs, models): WAL and the schema set on open, one short connection per transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


class Database:
    """One SQLite file under the data folder, safe to use from any thread or process: every transaction opens its
    own connection (30 s busy timeout) and closes it.

    `synchronous` is SQLite's durability setting for each connection: in WAL mode NORMAL may lose the last
    transactions on a power cut (never on a process crash) and spares an fsync per commit; FULL (SQLite's default)
    syncs every commit."""

    def __init__(self, path: str | Path, schema: str, *, synchronous: Synchronous = "FULL") -> None:
        self.path = Path(path)
        self.synchronous = synchronous
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")  # persistent: set once for the file
            db.executescript(schema)
        finally:
            db.close()

    @contextmanager
    def transaction(self, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection inside BEGIN (BEGIN IMMEDIATE: the write lock at once, e.g. to claim a row atomically);
        committed when the block ends, rolled back when it raises."""
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()
