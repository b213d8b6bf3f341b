"""The only module that talks to Chroma: chunk and document-record collections, batching, visibility.

Each knowledge base NAME is four Chroma collections:
- `kb_NAME` holds chunks (text, embedding, flat metadata) written through LlamaIndex's ChromaVectorStore;
- `kb_NAME__docs` holds one record per document: its source, content hash, status and the ids of its
  committed (visible) and pending chunks;
- `kb_NAME__staged` holds chunks whose vector is not computed yet (text and the same metadata): the keyword
  index reads them, so a document is searchable by keyword before it is embedded;
- `kb_NAME__pieces` holds the vectors of the chunks' pieces when the knowledge base embeds pieces (pieces.py).
A document version becomes visible in one write (its record), so a crash mid-ingest never shows a
half-written document; chunks that belong to no record are orphans and are deleted by the next run.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from .chunking import to_text_node
from .client import check_writable, make_client, where_of
from .errors import EmbeddingMismatchError, StoreError, as_store_error, guarded
from .fsio import flocked
from .pieces import PieceVectors, batches, chunks_by_piece
from .records import (
    COMPLETE,
    DELETING,
    DOCS,
    PENDING,
    PIECES,
    PREFIX,
    REBUILD,
    STAGED,
    DocRecord,
    StoredChunk,
    public_meta,
    validate_name,
)

log = logging.getLogger(__name__)
__all__ = [
    "COMPLETE", "DELETING", "PENDING", "DocRecord", "KnowledgeStore", "StoredChunk", "check_writable", "make_client",
    "validate_name", "where_of",
]

# the embedder a collection was built with, and the piece length its chunks were embedded in (0: whole chunks)
META_MODEL, META_DIM, META_PIECES = "kongming_embed_model", "kongming_embed_dim", "kongming_embed_piece_chars"
_PREFIX, _DOCS, _REBUILD, _STAGED = PREFIX, DOCS, REBUILD, STAGED


def list_collections(client: Any) -> list[str]:
    names = [getattr(c, "name", c) for c in client.list_collections()]
    return sorted(
        n[len(_PREFIX) :] for n in names if n.startswith(_PREFIX) and not n.endswith((_DOCS, _REBUILD, _STAGED, PIECES))
    )


class KnowledgeStore:
    """One knowledge base (collection) in Chroma."""

    def __init__(
        self, client: Any, name: str, where: str = "the store", reconnect: Callable[[], Any] | None = None,
        lock: Path | None = None,
    ) -> None:
        self.client, self.name, self.where, self._reconnect = client, validate_name(name), where, reconnect
        self.lock = lock  # a file whose flock a version's commit and an embedding flush hold (`writing`)
        try:
            self._finish_interrupted_rebuild()
            self._open_collections()
        except StoreError:
            raise
        except Exception as exc:
            err = as_store_error(exc, where, f"opening collection {name!r}")
            raise err or StoreError(f"cannot open collection {name!r} in {where}: {exc}") from exc
        self._batch = int(client.get_max_batch_size())

    def _open_collections(self) -> None:
        self.chunks = self.client.get_or_create_collection(
            _PREFIX + self.name, configuration={"hnsw": {"space": "cosine"}}, embedding_function=None
        )
        self.docs = self.client.get_or_create_collection(_PREFIX + self.name + _DOCS, embedding_function=None)
        self.staged = self.client.get_or_create_collection(_PREFIX + self.name + _STAGED, embedding_function=None)
        self.pieces = PieceVectors(self.client, _PREFIX + self.name + PIECES, self.where)
        self._vector_store: Any = None

    def writing(self) -> AbstractContextManager[None]:
        """The collection's write lock, across the processes of this machine (none without a `lock` file)."""
        return flocked(self.lock) if self.lock else nullcontext()

    @guarded("reopening the store")
    def reopen(self) -> None:
        """Read the store anew (an embedded store written by another process); a no-op for a server."""
        if self._reconnect is not None:
            self.client = self._reconnect()
            self._open_collections()

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

    def piece_chars(self, default: int) -> int:
        """The piece length this collection embeds in (0: whole chunks): the one recorded at its first embedding,
        else `default` for a collection with no vectors yet, else 0 (one embedded before pieces existed)."""
        meta = self.chunks.metadata or {}
        if META_PIECES in meta:
            return int(meta[META_PIECES])
        return default if self.count() == 0 else 0

    @guarded("recording the embedding model")
    def set_embedding_info(self, name: str, dim: int, piece_chars: int = 0) -> None:
        meta = self.chunks.metadata or {}
        if (meta.get(META_MODEL), meta.get(META_DIM), meta.get(META_PIECES)) != (name, dim, piece_chars):
            self.chunks.modify(metadata={META_MODEL: name, META_DIM: dim, META_PIECES: piece_chars})

    # --- document records ------------------------------------------------------------------
    @guarded("reading document records")
    def records(self, ids: Sequence[str] | None = None) -> dict[str, DocRecord]:
        """All document records, or those of `ids` that exist."""
        include = ["documents", "metadatas"]
        if ids is None:
            pages: Iterable[tuple[Any, ...]] = self._pages(self.docs, include=include)
        else:
            pages = [_unpack(self.docs.get(ids=list(ids), include=include))] if ids else []
        return {
            i: DocRecord.from_chroma(body, meta)
            for page_ids, docs, metas in pages
            for i, body, meta in zip(page_ids, docs, metas, strict=True)
        }

    @guarded("writing a document record")
    def put_record(self, rec: DocRecord) -> None:
        rec.updated_at = time.time()
        body, meta = rec.to_chroma()
        self.docs.upsert(ids=[rec.doc_id], documents=[body], metadatas=[meta], embeddings=[[1.0]])

    @guarded("deleting a document record")
    def delete_record(self, doc_id: str) -> None:
        self.docs.delete(ids=[doc_id])

    # --- chunks ----------------------------------------------------------------------------
    @property
    def vector_store(self) -> Any:
        if self._vector_store is None:
            from llama_index.vector_stores.chroma import ChromaVectorStore

            self._vector_store = ChromaVectorStore(chroma_collection=self.chunks)
        return self._vector_store

    @guarded("reading chunk ids")
    def existing_ids(self, ids: Sequence[str], staged: bool = False) -> set[str]:
        """Which of `ids` the store holds with their vector (or, `staged`, without one yet)."""
        found: set[str] = set()
        for part in batches(list(ids), self._batch):
            found.update((self.staged if staged else self.chunks).get(ids=part, include=[])["ids"])
        return found

    @guarded("reading chunk ids")
    def all_chunk_ids(self) -> set[str]:
        return {i for ids, _, _ in self._pages(self.chunks, include=[]) for i in ids}

    @guarded("writing chunks")
    def add_nodes(self, nodes: Sequence[Any]) -> None:
        """Add LlamaIndex nodes that carry embeddings, in batches Chroma accepts."""
        for part in batches(list(nodes), self._batch):
            self.vector_store.add(part)

    def add_pieces(self, by_hash: Mapping[str, Sequence[Sequence[float]]]) -> None:
        """Keep the piece vectors of chunk texts (by content hash); written before the chunks themselves."""
        self.pieces.add(by_hash)

    @guarded("updating chunk metadata")
    def update_metadata(self, nodes: Sequence[Any]) -> None:
        """New metadata (offsets, index) for embedded chunks whose text a new version keeps (ChunkNodes)."""
        from llama_index.core.vector_stores.utils import node_to_metadata_dict

        for part in batches(list(nodes), self._batch):
            metas = [node_to_metadata_dict(to_text_node(n.node_id, n.text, n.metadata), remove_text=True,
                                           flat_metadata=True) for n in part]  # fmt: skip
            self.chunks.update(ids=[n.node_id for n in part], metadatas=metas)

    @guarded("deleting chunks")
    def delete_chunks(self, ids: Iterable[str], keep_pieces: bool = False) -> None:
        """Delete chunks, embedded or staged, and (unless `keep_pieces`: drop_pieces later) the pieces of their
        texts that no chunk holds any more."""
        for part in batches(list(ids), self._batch):
            metas = [m for c in (self.chunks, self.staged) for m in c.get(ids=part, include=["metadatas"])["metadatas"]
                     ] if self.pieces.count() and not keep_pieces else []  # staged: pieces a crash left before it
            self.chunks.delete(ids=part)
            self.staged.delete(ids=part)
            self.drop_pieces({str(m["content_hash"]) for m in metas if m and m.get("content_hash")})

    def drop_pieces(self, hashes: Iterable[str]) -> None:
        """Delete the piece vectors of the texts among `hashes` (content hashes) that no chunk holds, embedded or
        staged (a staged chunk of the same text may take the vector of one being deleted, its pieces with it)."""
        for part in batches(sorted(set(hashes)), self._batch):
            held = [m for c in (self.chunks, self.staged) for m in c.get(
                where={"content_hash": {"$in": part}}, include=["metadatas"])["metadatas"]]  # fmt: skip
            self.pieces.delete(set(part) - {str(m.get("content_hash")) for m in held if m})

    # --- staged chunks: text and metadata, no vector yet -----------------------------------
    @guarded("staging chunks")
    def stage_nodes(self, nodes: Sequence[Any]) -> None:
        """Keep chunks without embeddings (ChunkNodes: their text and flat metadata)."""
        for part in batches(list(nodes), self._batch):
            self.staged.upsert(
                ids=[n.node_id for n in part],
                documents=[n.text for n in part],
                metadatas=[n.metadata for n in part],
                embeddings=[[1.0]] * len(part),  # the collection is read by id only; Chroma wants a vector
            )

    @guarded("reading staged chunk ids")
    def staged_ids(self) -> set[str]:
        return {i for ids, _, _ in self._pages(self.staged, include=[]) for i in ids}

    @guarded("reading staged chunks")
    def staged_nodes(self, ids: Sequence[str]) -> list[Any]:
        """The staged chunks of `ids` (those still staged) as LlamaIndex TextNodes, in the order of `ids`."""
        from llama_index.core.vector_stores.utils import metadata_dict_to_node

        found: dict[str, Any] = {}
        for part in batches(list(ids), self._batch):
            page_ids, texts, metas = _unpack(self.staged.get(ids=part, include=["documents", "metadatas"]))
            for i, text, meta in zip(page_ids, texts, metas, strict=True):  # staged before 2026-12: LlamaIndex's form
                legacy = "_node_content" in meta
                found[i] = metadata_dict_to_node(meta, text=text) if legacy else to_text_node(i, text, meta)
        return [found[i] for i in ids if i in found]

    @guarded("unstaging chunks")
    def unstage(self, ids: Iterable[str]) -> None:
        """Forget staged chunks (their vectors are written)."""
        for part in batches(list(ids), self._batch):
            self.staged.delete(ids=part)

    @guarded("reading chunks")
    def get_chunks(self, ids: Sequence[str] | None = None) -> Iterator[StoredChunk]:
        """Stored chunks by id (all of them when ids is None), embedded or staged, without embeddings."""
        include = ["documents", "metadatas"]
        seen: set[str] = set()
        for coll in (self.chunks, self.staged):
            if ids is None:
                pages: Iterable[tuple[Any, ...]] = self._pages(coll, include=include)
            else:
                wanted = [i for i in ids if i not in seen]
                pages = (_unpack(coll.get(ids=part, include=include)) for part in batches(wanted, self._batch))
            for page_ids, docs, metas in pages:
                for i, d, m in zip(page_ids, docs, metas, strict=True):
                    if i not in seen:
                        seen.add(i)
                        yield StoredChunk(i, d or "", public_meta(m))

    @guarded("reading embeddings")
    def vectors_by_text(self, ids: Sequence[str] = (), hashes: Sequence[str] = ()) -> dict[str, list[float]]:
        """The stored vector of each text among the chunks `ids` and those whose `content_hash` is in `hashes`
        (a text embeds the same wherever it occurs)."""
        out: dict[str, list[float]] = {}
        for by, values in (("ids", list(ids)), ("hashes", sorted(set(hashes)))):
            for part in batches(values, self._batch):
                sel: dict[str, Any] = {"ids": part} if by == "ids" else {"where": {"content_hash": {"$in": part}}}
                r = self.chunks.get(**sel, include=["documents", "embeddings"])
                pairs = zip(r["documents"], r["embeddings"], strict=True)
                out.update((t, [float(x) for x in v]) for t, v in pairs if t)
        return out

    @guarded("counting chunks")
    def count(self) -> int:
        """Embedded chunks. A reader counts before each search: when `ingest rebuild` (another process, or another
        store object) swapped new collections in under this name, the old ones are gone, and it opens the new."""
        try:
            return int(self.chunks.count())
        except Exception as exc:
            if "does not exist" not in str(exc).lower():
                raise
            log.info("the collections of %s were replaced (a rebuild): opening them anew", self.name)
            if self._reconnect is not None:
                self.reopen()
            else:
                self._open_collections()
            return int(self.chunks.count())

    @guarded("searching")
    def query(self, embedding: Any, n: int, filters: Any = None, piece_top: int = 1) -> list[StoredChunk]:
        """Nearest chunks by cosine similarity, through LlamaIndex's VectorStoreQuery; a store with piece vectors
        ranks an unfiltered search by the mean of each chunk's `piece_top` best pieces (pieces.py)."""
        from llama_index.core.vector_stores.types import VectorStoreQuery

        n = min(n, self.count())
        if n <= 0:
            return []
        pieces = self.pieces.count() if int((self.chunks.metadata or {}).get(META_PIECES, 0)) > 0 else 0
        if filters is None and pieces:
            return chunks_by_piece(self, embedding, n, pieces, piece_top)  # over the chunks' best pieces
        q = VectorStoreQuery(query_embedding=list(map(float, embedding)), similarity_top_k=n, filters=filters)
        try:
            res = self.vector_store.query(q)
        except Exception as exc:
            # SQLite knows chunks another process wrote since this one read its vector index: read it anew
            if "error finding id" not in str(exc).lower() or self._reconnect is None:
                raise
            log.info("the store changed under this process (%s): reopening it", exc)
            self.reopen()
            res = self.vector_store.query(q)
        out = []
        for node, sim in zip(res.nodes or [], res.similarities or [], strict=True):
            # ChromaVectorStore reports exp(-distance); cosine distance = 1 - cos.
            cos = 1.0 + math.log(sim) if sim > 0 else -1.0
            out.append(StoredChunk(node.node_id, node.get_content(), public_meta(node.metadata), cos))
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
            names = {getattr(c, "name", c) for c in self.client.list_collections()}
        pieces = _PREFIX + self.name + PIECES
        if pieces + _REBUILD in names and tmp not in names:  # the chunks were swapped in, not yet their pieces
            if pieces in names:
                self.client.delete_collection(pieces)
            self.client.get_collection(pieces + _REBUILD).modify(name=pieces)

    @guarded("starting a rebuild")
    def rebuild_target(self) -> RebuildTarget:
        """Fresh chunk and piece collections to re-embed into; `swap_in` makes them the live ones."""
        tmp, pieces = _PREFIX + self.name + _REBUILD, _PREFIX + self.name + PIECES + _REBUILD
        for name in (tmp, pieces):
            try:
                self.client.delete_collection(name)
            except Exception:
                pass
        coll = self.client.create_collection(tmp, configuration={"hnsw": {"space": "cosine"}}, embedding_function=None)
        return RebuildTarget(coll, PieceVectors(self.client, pieces, self.where), self.where, self._batch)

    @guarded("finishing a rebuild")
    def swap_in(self, new: RebuildTarget) -> None:
        self.client.delete_collection(_PREFIX + self.name)
        new.collection.modify(name=_PREFIX + self.name)
        self.chunks = self.client.get_collection(_PREFIX + self.name)
        self.client.delete_collection(self.pieces.name)
        new.pieces.collection.modify(name=self.pieces.name)
        self.pieces = PieceVectors(self.client, self.pieces.name, self.where)
        self._vector_store = None


class RebuildTarget:
    """The chunk and piece collections `rebuild` fills beside the live ones, until `KnowledgeStore.swap_in`."""

    def __init__(self, collection: Any, pieces: PieceVectors, where: str, batch: int) -> None:
        from llama_index.vector_stores.chroma import ChromaVectorStore

        self.collection, self.pieces, self.where, self._batch = collection, pieces, where, batch
        self._writer = ChromaVectorStore(chroma_collection=collection)

    @guarded("writing re-embedded chunks")
    def add_nodes(self, nodes: Sequence[Any]) -> None:
        for part in batches(list(nodes), self._batch):
            self._writer.add(part)

    def add_pieces(self, by_hash: Mapping[str, Sequence[Sequence[float]]]) -> None:
        self.pieces.add(by_hash)

    @guarded("recording the embedding model")
    def set_embedding_info(self, name: str, dim: int, piece_chars: int = 0) -> None:
        self.collection.modify(metadata={META_MODEL: name, META_DIM: dim, META_PIECES: piece_chars})


def _unpack(r: Any) -> tuple[Any, ...]:
    n = len(r["ids"])
    return r["ids"], r.get("documents") or [None] * n, r.get("metadatas") or [{}] * n
