"""The only module that talks to Chroma: chunk and document-record collections, batching, visibility.

Each knowledge base NAME is two Chroma collections:
- `kb_NAME` holds chunks (text, embedding, flat metadata) written through LlamaIndex's ChromaVectorStore;
- `kb_NAME__docs` holds one record per document: its source, content hash, status and the ids of its
  committed (visible) and pending chunks.
A document version becomes visible in one write (its record), so a crash mid-ingest never shows a
half-written document; chunks that belong to no record are orphans and are deleted by the next run.
"""

from __future__ import annotations

import errno
import functools
import inspect
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlparse

from .errors import EmbeddingMismatchError, IngestError, StoreError
from .settings import IngestSettings

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,60}[A-Za-z0-9]$|^[A-Za-z0-9]$")
_PREFIX, _DOCS, _REBUILD = "kb_", "__docs", "__rebuild"
META_MODEL, META_DIM = "kongming_embed_model", "kongming_embed_dim"
COMPLETE, PENDING, DELETING = "complete", "pending", "deleting"
F = TypeVar("F", bound=Callable[..., Any])
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
_DISK_WORDS = ("disk is full", "no space left", "readonly database", "read-only file system", "permission denied")


@dataclass
class DocRecord:
    """What the store knows about one document."""

    doc_id: str
    source: str
    title: str
    doc_hash: str
    status: str = PENDING
    fmt: str = ""
    encoding: str = ""
    chars: int = 0
    updated_at: float = 0.0
    committed: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    aliases: list[list[str]] = field(default_factory=list)
    entities: list[str] = field(default_factory=list)

    @property
    def n_chunks(self) -> int:
        return len(self.committed)

    def to_chroma(self) -> tuple[str, dict[str, Any]]:
        body = json.dumps(
            {"committed": self.committed, "pending": self.pending, "aliases": self.aliases, "entities": self.entities},
            ensure_ascii=False,
        )
        meta = {k: v for k, v in asdict(self).items() if k not in ("committed", "pending", "aliases", "entities")}
        meta["n_chunks"] = self.n_chunks
        return body, meta

    @classmethod
    def from_chroma(cls, body: str, meta: dict[str, Any]) -> DocRecord:
        data = json.loads(body or "{}")
        fields = {k: meta[k] for k in cls.__dataclass_fields__ if k in meta}
        return cls(
            **fields,
            committed=data.get("committed", []),
            pending=data.get("pending", []),
            aliases=data.get("aliases", []),
            entities=data.get("entities", []),
        )


@dataclass
class StoredChunk:
    chunk_id: str
    text: str
    metadata: dict[str, Any]
    score: float = 0.0


def validate_name(name: str) -> str:
    if not _NAME.match(name) or name.endswith((_DOCS, _REBUILD)):
        raise IngestError(
            f"collection name {name!r} is not allowed: use 1-62 ASCII letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit (e.g. 'sanguo')"
        )
    return name


def make_client(settings: IngestSettings) -> Any:
    """Embedded PersistentClient by default; HttpClient when `chroma_url` is set."""
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
                f"cannot reach the Chroma server at {settings.chroma_url}: {exc} {_server_fix(settings.chroma_url)}"
            ) from exc
    path = settings.store_path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the store folder {path}: {exc.strerror}; {_disk_fix()}") from exc
    try:
        return chromadb.PersistentClient(path=str(path), settings=chroma_settings)
    except Exception as exc:
        err = _as_store_error(exc, where_of(settings), "opening the store")
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
            raise StoreError(f"the data folder {folder} cannot be written ({exc.strerror}): {_disk_fix()}") from exc


def where_of(settings: IngestSettings) -> str:
    """How error messages name the store: the server's address or the embedded folder."""
    if settings.chroma_url:
        return f"the Chroma server at {settings.chroma_url}"
    return f"the store at {settings.store_path}"


def _server_fix(url: str) -> str:
    return (
        f"(start it with `chroma run --path DIR --host HOST --port PORT`, or point KONGMING_CHROMA_URL / "
        f"--chroma-url at a running server instead of {url}); the store stays consistent: run the same command "
        "again once the server answers"
    )


def _disk_fix() -> str:
    return (
        "free some space or make the folder writable, or set KONGMING_DATA_DIR (--data-dir) to a writable folder "
        "with room; an interrupted ingest finishes when the same command is run again"
    )


def _as_store_error(exc: BaseException, where: str, doing: str) -> StoreError | None:
    """A StoreError that says what happened and what to do, for errors of reaching or writing the store."""
    if isinstance(exc, StoreError):
        return None  # already says it
    import httpx

    if isinstance(exc, httpx.TransportError | ConnectionError):
        url = where.removeprefix("the Chroma server at ")
        return StoreError(f"{where} did not answer while {doing} ({exc or type(exc).__name__}) {_server_fix(url)}")
    text = str(exc).lower()
    if (isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS) or any(w in text for w in _DISK_WORDS):
        return StoreError(f"cannot write {where} while {doing} ({exc}): {_disk_fix()}")
    low = _low_disk(where)
    if low:  # Chroma's own errors after a failed write say little ("Failed to apply logs"): look at the disk
        return StoreError(f"cannot write {where} while {doing} ({exc}; {low}): {_disk_fix()}")
    return None


def _low_disk(where: str) -> str | None:
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


def _guarded(doing: str) -> Callable[[F], F]:
    """Turn failures to reach or write the store inside a KnowledgeStore method into a StoreError naming it."""

    def wrap(fn: F) -> F:
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def gen(self: KnowledgeStore, *args: Any, **kwargs: Any) -> Any:
                try:
                    yield from fn(self, *args, **kwargs)
                except Exception as exc:
                    err = _as_store_error(exc, self.where, doing)
                    if err is None:
                        raise
                    raise err from exc

            return gen  # type: ignore[return-value]

        @functools.wraps(fn)
        def call(self: KnowledgeStore, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(self, *args, **kwargs)
            except Exception as exc:
                err = _as_store_error(exc, self.where, doing)
                if err is None:
                    raise
                raise err from exc

        return call  # type: ignore[return-value]

    return wrap


def list_collections(client: Any) -> list[str]:
    names = [getattr(c, "name", c) for c in client.list_collections()]
    return sorted(
        n[len(_PREFIX) :] for n in names if n.startswith(_PREFIX) and not n.endswith(_DOCS) and not n.endswith(_REBUILD)
    )


class KnowledgeStore:
    """One knowledge base (collection) in Chroma."""

    def __init__(self, client: Any, name: str, where: str = "the store") -> None:
        self.client = client
        self.name = validate_name(name)
        self.where = where
        try:
            self._finish_interrupted_rebuild()
            self.chunks = client.get_or_create_collection(
                _PREFIX + name, configuration={"hnsw": {"space": "cosine"}}, embedding_function=None
            )
            self.docs = client.get_or_create_collection(_PREFIX + name + _DOCS, embedding_function=None)
        except StoreError:
            raise
        except Exception as exc:
            err = _as_store_error(exc, where, f"opening collection {name!r}")
            raise err or StoreError(f"cannot open collection {name!r} in {where}: {exc}") from exc
        self._batch = int(client.get_max_batch_size())
        self._vector_store: Any = None

    # --- embedding model record -------------------------------------------------------------
    def embedding_info(self) -> tuple[str, int] | None:
        meta = self.chunks.metadata or {}
        if META_MODEL in meta:
            return str(meta[META_MODEL]), int(meta[META_DIM])
        return None

    def check_embedder(self, name: str, dim: int | None = None) -> None:
        """Refuse to mix embedding models in one collection."""
        info = self.embedding_info()
        if info is None:
            return
        if info[0] != name or (dim is not None and info[1] != dim):
            raise EmbeddingMismatchError(
                f"collection {self.name!r} was built with {info[0]} ({info[1]}-d) but the configured "
                f"embedder is {name}{f' ({dim}-d)' if dim else ''}: set KONGMING_EMBED_MODEL back, or run "
                f"`ingest rebuild --collection {self.name}` to re-embed it with the new model"
            )

    @_guarded("recording the embedding model")
    def set_embedding_info(self, name: str, dim: int) -> None:
        if self.embedding_info() != (name, dim):
            self.chunks.modify(metadata={META_MODEL: name, META_DIM: dim})

    # --- document records ------------------------------------------------------------------
    @_guarded("reading document records")
    def records(self) -> dict[str, DocRecord]:
        out: dict[str, DocRecord] = {}
        for ids, docs, metas in self._pages(self.docs, include=["documents", "metadatas"]):
            for i, body, meta in zip(ids, docs, metas, strict=True):
                out[i] = DocRecord.from_chroma(body, meta)
        return out

    @_guarded("writing a document record")
    def put_record(self, rec: DocRecord) -> None:
        rec.updated_at = time.time()
        body, meta = rec.to_chroma()
        self.docs.upsert(ids=[rec.doc_id], documents=[body], metadatas=[meta], embeddings=[[1.0]])

    @_guarded("deleting a document record")
    def delete_record(self, doc_id: str) -> None:
        self.docs.delete(ids=[doc_id])

    # --- chunks ----------------------------------------------------------------------------
    @property
    def vector_store(self) -> Any:
        if self._vector_store is None:
            from llama_index.vector_stores.chroma import ChromaVectorStore

            self._vector_store = ChromaVectorStore(chroma_collection=self.chunks)
        return self._vector_store

    @_guarded("reading chunk ids")
    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for part in _batches(list(ids), self._batch):
            found.update(self.chunks.get(ids=part, include=[])["ids"])
        return found

    @_guarded("reading chunk ids")
    def all_chunk_ids(self) -> set[str]:
        return {i for ids, _, _ in self._pages(self.chunks, include=[]) for i in ids}

    @_guarded("writing chunks")
    def add_nodes(self, nodes: Sequence[Any]) -> None:
        """Add LlamaIndex nodes that carry embeddings, in batches Chroma accepts."""
        for part in _batches(list(nodes), self._batch):
            self.vector_store.add(part)

    @_guarded("updating chunk metadata")
    def update_metadata(self, ids: Sequence[str], metadatas: Sequence[dict[str, Any]]) -> None:
        for lo in range(0, len(ids), self._batch):
            self.chunks.update(ids=list(ids[lo : lo + self._batch]), metadatas=list(metadatas[lo : lo + self._batch]))

    @_guarded("deleting chunks")
    def delete_chunks(self, ids: Iterable[str]) -> None:
        for part in _batches(list(ids), self._batch):
            self.chunks.delete(ids=part)

    @_guarded("reading chunks")
    def get_chunks(self, ids: Sequence[str] | None = None) -> Iterator[StoredChunk]:
        """Stored chunks by id (all of them when ids is None), without embeddings."""
        include = ["documents", "metadatas"]
        if ids is None:
            pages: Iterable[tuple[Any, ...]] = self._pages(self.chunks, include=include)
        else:
            pages = (_unpack(self.chunks.get(ids=part, include=include)) for part in _batches(list(ids), self._batch))
        for page_ids, docs, metas in pages:
            for i, d, m in zip(page_ids, docs, metas, strict=True):
                yield StoredChunk(i, d or "", _public_meta(m))

    @_guarded("counting chunks")
    def count(self) -> int:
        return int(self.chunks.count())

    @_guarded("searching")
    def query(self, embedding: Any, n: int, filters: Any = None) -> list[StoredChunk]:
        """Nearest chunks by cosine similarity, through LlamaIndex's VectorStoreQuery."""
        from llama_index.core.vector_stores.types import VectorStoreQuery

        n = min(n, self.count())
        if n <= 0:
            return []
        q = VectorStoreQuery(query_embedding=list(map(float, embedding)), similarity_top_k=n, filters=filters)
        res = self.vector_store.query(q)
        out = []
        for node, sim in zip(res.nodes or [], res.similarities or [], strict=True):
            # ChromaVectorStore reports exp(-distance); cosine distance = 1 - cos.
            import math

            cos = 1.0 + math.log(sim) if sim > 0 else -1.0
            out.append(StoredChunk(node.node_id, node.get_content(), _public_meta(node.metadata), cos))
        return out

    # --- helpers ---------------------------------------------------------------------------
    def _pages(self, coll: Any, include: list[str]) -> Iterator[tuple[Any, ...]]:
        offset = 0
        while True:
            r = coll.get(include=include, limit=self._batch, offset=offset)
            if not r["ids"]:
                return
            yield _unpack(r)
            offset += len(r["ids"])

    def _finish_interrupted_rebuild(self) -> None:
        names = {getattr(c, "name", c) for c in self.client.list_collections()}
        tmp = _PREFIX + self.name + _REBUILD
        if tmp in names and _PREFIX + self.name not in names:
            log.warning("finishing an interrupted rebuild of %s", self.name)
            self.client.get_collection(tmp).modify(name=_PREFIX + self.name)

    @_guarded("starting a rebuild")
    def rebuild_target(self) -> Any:
        """A fresh chunk collection to re-embed into; `swap_in` makes it the live one."""
        tmp = _PREFIX + self.name + _REBUILD
        try:
            self.client.delete_collection(tmp)
        except Exception:
            pass
        return self.client.create_collection(tmp, configuration={"hnsw": {"space": "cosine"}}, embedding_function=None)

    @_guarded("finishing a rebuild")
    def swap_in(self, new: Any) -> None:
        self.client.delete_collection(_PREFIX + self.name)
        new.modify(name=_PREFIX + self.name)
        self.chunks = self.client.get_collection(_PREFIX + self.name)
        self._vector_store = None

    def drop(self) -> None:
        for suffix in ("", _DOCS, _REBUILD):
            try:
                self.client.delete_collection(_PREFIX + self.name + suffix)
            except Exception:
                pass


def _unpack(r: Any) -> tuple[Any, ...]:
    n = len(r["ids"])
    return r["ids"], r.get("documents") or [None] * n, r.get("metadatas") or [{}] * n


# Keys LlamaIndex adds for its own bookkeeping; callers get the chunk's own metadata.
_LLAMA_KEYS = {"_node_content", "_node_type", "document_id", "ref_doc_id"}


def _public_meta(meta: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (meta or {}).items() if k not in _LLAMA_KEYS}


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for lo in range(0, len(items), size):
        yield items[lo : lo + size]
