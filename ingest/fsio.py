"""Files that readers see whole or not at all (write to a temporary name, then rename), locks between processes,
and disk-fault detection.

The one home for the write-then-rename pattern and for telling a full or read-only disk apart from other
`OSError`s; `ingest`, `finetune` and `service` all use it (ingest is the bottom of the import arrows).
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
_DISK_WORDS = ("disk is full", "no space left", "readonly database", "read-only file system", "permission denied")


def is_disk_error(exc: BaseException) -> bool:
    """True when `exc` (or its message, for libraries such as SQLite that wrap it) says the disk is full,
    read-only or not writable."""
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        return True
    text = str(exc).lower()
    return any(w in text for w in _DISK_WORDS)


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, perm: int = 0o644, encoding: str = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file beside `path` (O_EXCL, so never through a planted link); on a clean exit it is
    renamed over `path` (atomic on POSIX: a reader sees the old file or the new one), on any exception it is
    removed (a full disk leaves no half-written copy). `mode` is "w" (text, `encoding`) or "wb"; `perm` is the
    final file mode. Creates the parent folder."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
        os.chmod(tmp, perm)
        os.replace(tmp, path)  # rename replaces a link itself, never what it points to
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str, *, perm: int = 0o644) -> None:
    """`path.write_text(text)` that readers never see half-done."""
    with atomic_open(path, "w", perm=perm) as f:
        f.write(text)


def write_bytes_atomic(path: str | Path, data: bytes, *, perm: int = 0o644) -> None:
    """`path.write_bytes(data)` that readers never see half-done."""
    with atomic_open(path, "wb", perm=perm) as f:
        f.write(data)


@contextmanager
def flocked(path: Path, exclusive: bool = True) -> Iterator[None]:
    """Hold an flock on `path` (a folder, or a lock file, made when missing) for the block: exclusive, or shared
    with other shared holders. The kernel releases it when the process dies; two holders in one process (threads,
    each with its own descriptor) exclude each other too. Processes on other machines are not excluded."""
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
