"""Domain errors of the knowledge base, and the translation of store and disk failures into them; CLIs and
the service map them to exit codes and HTTP errors."""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from .fsio import is_disk_error

F = TypeVar("F", bound=Callable[..., Any])


class IngestError(Exception):
    """Base class: a problem the user can act on; the message says what and how."""


class UnreadableFileError(IngestError):
    """A file that cannot be turned into text (empty, binary, undecodable, corrupt)."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class EmbeddingMismatchError(IngestError):
    """The collection was built with another embedding model than the one configured."""


class StoreError(IngestError):
    """The vector store cannot be reached or written."""


class UnknownDocumentError(IngestError):
    """A path or id that names no (visible) document of the collection: given to `remove`, or a search
    restricted to it."""


def server_fix(url: str) -> str:
    return (
        f"(start it with `chroma run --path DIR --host HOST --port PORT`, or point KONGMING_CHROMA_URL / "
        f"--chroma-url at a running server instead of {url}); the store stays consistent: run the same command "
        "again once the server answers"
    )


def disk_fix() -> str:
    return (
        "free some space or make the folder writable, or set KONGMING_DATA_DIR (--data-dir) to a writable folder "
        "with room; an interrupted ingest finishes when the same command is run again"
    )


def as_store_error(exc: BaseException, where: str, doing: str) -> StoreError | None:
    """A StoreError that says what happened and what to do, for errors of reaching or writing the store."""
    if isinstance(exc, StoreError):
        return None  # already says it
    import httpx

    if isinstance(exc, httpx.TransportError | ConnectionError):
        url = where.removeprefix("the Chroma server at ")
        return StoreError(f"{where} did not answer while {doing} ({exc or type(exc).__name__}) {server_fix(url)}")
    if is_disk_error(exc):
        return StoreError(f"cannot write {where} while {doing} ({exc}): {disk_fix()}")
    low = low_disk(where)
    if low:  # Chroma's own errors after a failed write say little ("Failed to apply logs"): look at the disk
        return StoreError(f"cannot write {where} while {doing} ({exc}; {low}): {disk_fix()}")
    return None


def low_disk(where: str) -> str | None:
    """Why the embedded store's filesystem cannot take writes (read-only, nearly full), if it cannot."""
    if not where.startswith("the store at "):
        return None
    try:
        st = os.statvfs(where.removeprefix("the store at "))
    except OSError:
        return None
    if st.f_flag & os.ST_RDONLY:
        return "the filesystem is read-only"
    free = st.f_bavail * st.f_frsize
    return f"only {free // 1024} KiB free" if free < 4 * 2**20 else None


def guarded(doing: str) -> Callable[[F], F]:
    """Turn failures to reach or write the store inside a method (of an object with a `where`) into a
    StoreError naming it."""

    def translate(exc: Exception, where: str) -> NoReturn:
        err = as_store_error(exc, where, doing)
        if err is None:
            raise exc
        raise err from exc

    def wrap(fn: F) -> F:
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def gen(self: Any, *args: Any, **kwargs: Any) -> Any:
                try:
                    yield from fn(self, *args, **kwargs)
                except Exception as exc:
                    translate(exc, self.where)

            return gen  # type: ignore[return-value]

        @functools.wraps(fn)
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(self, *args, **kwargs)
            except Exception as exc:
                translate(exc, self.where)

        return call  # type: ignore[return-value]

    return wrap
