"""Opening Chroma: an embedded folder by default, a server when `chroma_url` is set; checks that the data folder
can be written, and how error messages name the store."""

from __future__ import annotations

import os
import tempfile
import threading
from typing import Any
from urllib.parse import urlparse

from .errors import StoreError, as_store_error, disk_fix, server_fix
from .settings import IngestSettings

# Chroma's cache of embedded systems is not thread-safe: a reopen (clearing it) beside another thread opening a
# client gave that one a system not yet started ("'RustBindingsAPI' object has no attribute 'bindings'")
_CLIENTS = threading.Lock()


def make_client(settings: IngestSettings, fresh: bool = False) -> Any:
    """Embedded PersistentClient by default; HttpClient when `chroma_url` is set.

    Embedded clients of one folder share one in-process system, whose vector index is read from disk once: it
    does not see what another process (the `ingest` CLI beside `kongming serve`) wrote since. `fresh` opens
    the folder anew, for a reader that saw the documents change.
    """
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.chroma_url:
        url = urlparse(settings.chroma_url)
        try:
            return chromadb.HttpClient(
                host=url.hostname or "127.0.0.1",
                port=url.port or (443 if url.scheme == "https" else 8000),
                ssl=url.scheme == "https",
                settings=chroma_settings,
            )
        except Exception as exc:  # chromadb raises ValueError/ConnectionError variants
            raise StoreError(
                f"cannot reach the Chroma server at {settings.chroma_url}: {exc} {server_fix(settings.chroma_url)}"
            ) from exc
    path = settings.store_path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the store folder {path}: {exc.strerror}; {disk_fix()}") from exc
    try:
        with _CLIENTS:
            if fresh:  # later clients of this folder (and this one) read it anew; clients open now keep theirs
                from chromadb.api.shared_system_client import SharedSystemClient

                SharedSystemClient.clear_system_cache()
            return chromadb.PersistentClient(path=str(path), settings=chroma_settings)
    except Exception as exc:
        err = as_store_error(exc, where_of(settings), "opening the store")
        if err is None:
            raise
        raise err from exc


def check_writable(settings: IngestSettings) -> None:
    """Fail early, naming the folder, when the data folder cannot be written (read-only, full, no rights)."""
    folders = [settings.data_dir] if settings.chroma_url else [settings.data_dir, settings.store_path]
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".write-check.", dir=folder)
            try:
                os.write(fd, b"\0" * 4096)  # an empty file fits on a full disk; a block does not
            finally:
                os.close(fd)
                os.unlink(tmp)
        except OSError as exc:
            raise StoreError(f"the data folder {folder} cannot be written ({exc.strerror}): {disk_fix()}") from exc


def where_of(settings: IngestSettings) -> str:
    """How error messages name the store: the server's address or the embedded folder."""
    url = settings.chroma_url
    return f"the Chroma server at {url}" if url else f"the store at {settings.store_path}"


def missing_knowledge_base(settings: IngestSettings) -> str:
    """"" when the knowledge base `settings.collection` exists, else why not, naming those that do (`knowledge base
    'defualt' does not exist (knowledge bases here: default)`): opening a mistyped name would create an empty one.
    Raises StoreError when the store cannot be opened."""
    from .store import list_collections

    names = list_collections(make_client(settings))
    if settings.collection in names:
        return ""
    have = f"knowledge bases here: {', '.join(names)}" if names else "there is none here yet"
    return f"knowledge base {settings.collection!r} does not exist ({have})"
