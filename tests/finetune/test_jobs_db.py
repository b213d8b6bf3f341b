"""finetune.jobs.db: the schema and WAL set on open, a transaction commits or rolls back whole, durability per file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from finetune.jobs.db import Database

SCHEMA = "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER);"


def test_a_transaction_commits_whole_or_not_at_all(tmp_path: Path) -> None:
    db = Database(tmp_path / "sub" / "x.sqlite3", SCHEMA)
    with db.transaction() as c:
        c.execute("INSERT INTO t VALUES ('a', 1)")
    with pytest.raises(sqlite3.IntegrityError), db.transaction() as c:
        c.execute("INSERT INTO t VALUES ('b', 2)")
        c.execute("INSERT INTO t VALUES ('a', 3)")  # duplicate key: the 'b' row goes too
    with db.transaction() as c:
        assert c.execute("SELECT k, v FROM t").fetchall() == [("a", 1)]
        assert c.execute("PRAGMA journal_mode").fetchone() == ("wal",)


@pytest.mark.parametrize(("synchronous", "level"), [("NORMAL", 1), ("FULL", 2)])
def test_synchronous_is_set_per_connection(tmp_path: Path, synchronous: str, level: int) -> None:
    db = Database(tmp_path / "x.sqlite3", SCHEMA, synchronous=synchronous)  # type: ignore[arg-type]
    with db.transaction() as c:
        assert c.execute("PRAGMA synchronous").fetchone() == (level,)


def test_immediate_takes_the_write_lock_at_once(tmp_path: Path) -> None:
    db = Database(tmp_path / "x.sqlite3", SCHEMA)
    other = sqlite3.connect(db.path, timeout=0, isolation_level=None)
    try:
        with db.transaction(immediate=True):
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        with db.transaction():  # a deferred BEGIN takes no lock until it writes
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
    finally:
        other.close()
