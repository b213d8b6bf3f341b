"""The read side of vector stores: hybrid search over one or more stores (Dify's "hit testing"), a file's chunks,
and the knowledge base a chat request restricted to some stores answers from."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, cast

from ingest.aliases import AliasTable
from ingest.embedding import Embedder
from ingest.kb import open_store
from ingest.retrieval import Filters, RetrievedChunk, Retriever
from ingest.settings import IngestSettings
from ingest.store import DocRecord, KnowledgeStore, make_client, where_of

from ..answer.retrieval import KnowledgeBase, source_name
from ..errors import BadRequest
from .ingesting import load_libraries
from .registry import Registry

MAX_RESULTS = 50  # OpenAI's max_num_results


class StoreSearch:
    """Retrievers and stores per collection, opened on first use and kept; VectorStoreService builds on it."""

    registry: Registry

    def __init__(self, settings: IngestSettings, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.embedder = embedder
        self._open_lock = threading.Lock()
        self._stores: dict[str, KnowledgeStore] = {}
        self._retrievers: dict[str, Retriever] = {}
        self._kbs: dict[tuple[str, ...], KnowledgeBase] = {}

    def collection_of(self, store_id: str) -> str:  # VectorStoreService's
        raise NotImplementedError

    def retrieve_file(self, store_id: str, file_id: str) -> dict[str, Any]:  # VectorStoreService's
        raise NotImplementedError

    def store(self, collection: str) -> KnowledgeStore:
        with self._open_lock:
            if collection not in self._stores:
                self._stores[collection] = open_store(self.settings, collection)
            return self._stores[collection]

    def records(self, collection: str) -> dict[str, DocRecord]:
        return self.store(collection).records()

    def retriever(self, collection: str) -> Retriever:
        """The collection's hybrid retriever (the chat's default knowledge base reads through it too); it re-reads
        the visible documents on every search (refresh 0 s), so a file is searchable as soon as it is keyword-indexed
        (before its embedding ends) and gone as soon as it is deleted, and the vectors the background embedding
        writes count from the next search on. Its store is not reopened: vectors another process writes into an
        embedded store are found by the dense side after a restart (a Chroma server has no such lag)."""
        load_libraries()
        with self._open_lock:
            if collection not in self._retrievers:
                retriever = Retriever(self.settings, collection, self.embedder, refresh_seconds=0)
                # never reopened: this process writes these stores, and its reads share one Chroma system with
                # its writes; a reopen while a file ingests re-read the whole index (searches of 20-50 s) and
                # broke the ingest ("no attribute 'bindings'", "hnsw segment reader: Nothing found on disk")
                retriever.store = KnowledgeStore(make_client(self.settings), collection, where_of(self.settings))
                self._retrievers[collection] = retriever
            return self._retrievers[collection]

    def forget(self, collection: str) -> None:
        """Drop what is open on a collection about to be deleted."""
        with self._open_lock:
            self._stores.pop(collection, None)
            self._retrievers.pop(collection, None)
            for key in [k for k in self._kbs if collection in k]:
                self._kbs.pop(key).close()

    def search(self, store_ids: str | Sequence[str], query: str, k: int = 10) -> list[dict[str, Any]]:
        """Hybrid search (dense + BM25, fused by reciprocal rank) over the stores, best first, at most `k` (1-50).

        Each hit is OpenAI's search result: `file_id`, `filename`, `score` (the fused score the hits are ordered
        by), `content` [{type: "text", text}], and `attributes` {vector_store_id, document (title), chapter,
        chapter_title, chunk_index, dense (cosine), keyword (BM25), fused}; a score is 0.0 when that ranking did
        not find the chunk, chapter keys are absent when the text has none. NotFound for an unknown store."""
        ids = [store_ids] if isinstance(store_ids, str) else list(store_ids)
        if not ids:
            raise BadRequest("give at least one vector store id", param="vector_store_ids")
        if not query.strip():
            raise BadRequest("the query is empty", param="query")
        if not 1 <= k <= MAX_RESULTS:
            raise BadRequest(f"max_num_results must be between 1 and {MAX_RESULTS}", param="max_num_results")
        hits: list[dict[str, Any]] = []
        for collection in dict.fromkeys(self.collection_of(i) for i in ids):
            files = self._file_names(collection)
            for h in self.retriever(collection).retrieve(query, k):
                hits.append(_hit(collection, h, files))
        return sorted(hits, key=lambda h: -h["score"])[:k]

    def files_by_document(self, store_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """document id -> (file id, file name) of the files attached to these stores through the API (a document
        the `ingest` CLI added is a file of its own id)."""
        collections = dict.fromkeys(self.collection_of(i) for i in store_ids)
        return {d: f for c in collections for d, f in self._file_names(c).items()}

    def _file_names(self, collection: str) -> dict[str, tuple[str, str]]:
        """doc id -> (file id, file name) of the files attached through the API."""
        return {d: (f.id, f.filename) for f in self.registry.files_of(collection) for d in f.doc_ids}

    def chunks(self, store_id: str, file_id: str, limit: int = 20, offset: int = 0) -> list[dict[str, Any]]:
        """A file's chunks in reading order, `limit` of them from `offset`: [{index, text, chapter, chapter_title,
        document}] (chapter keys None when the text has no chapters). NotFound for an unknown store or file."""
        if limit < 1 or offset < 0:
            raise BadRequest("limit must be at least 1 and offset at least 0", param="limit")
        collection = self.collection_of(store_id)
        docs = self.retrieve_file(store_id, file_id)["kongming"]["documents"]
        store = self.store(collection)
        records = store.records(docs)
        order = {d: n for n, d in enumerate(docs)}
        ids = [i for d in docs if d in records for i in records[d].committed]
        found = sorted(store.get_chunks(ids), key=lambda c: (order.get(str(c.metadata.get("doc_id")), 0),
                                                            int(c.metadata.get("chunk_index") or 0)))
        return [
            {"index": int(c.metadata.get("chunk_index") or 0), "text": c.text, "chapter": c.metadata.get("chapter"),
             "chapter_title": c.metadata.get("chapter_title"), "document": c.metadata.get("doc_id")}
            for c in found[offset : offset + limit]
        ]  # fmt: skip

    def knowledge_base(self, store_ids: Sequence[str]) -> KnowledgeBase:
        """What a chat turn restricted to these stores retrieves from (the rag route, `both`, Responses'
        file_search). NotFound for an unknown store."""
        collections = tuple(dict.fromkeys(self.collection_of(i) for i in store_ids))
        if not collections:
            raise BadRequest("give at least one vector store id", param="kongming.vector_store_ids")
        parts = [self._kb((c,)) for c in collections]
        return parts[0] if len(parts) == 1 else self._kb(collections, parts)

    def _kb(self, key: tuple[str, ...], parts: list[KnowledgeBase] | None = None) -> KnowledgeBase:
        retriever = self.retriever(key[0]) if parts is None else None
        with self._open_lock:
            if key not in self._kbs:
                settings = self.settings.model_copy(update={"collection": key[0]})
                self._kbs[key] = KnowledgeBase(settings, retriever) if parts is None else StoresKnowledgeBase(parts)
            return self._kbs[key]

    def close(self) -> None:
        with self._open_lock:
            for kb in self._kbs.values():
                kb.close()
            self._kbs.clear()


class StoresKnowledgeBase(KnowledgeBase):
    """Several stores as one knowledge base: searched each, hits merged by fused score; the answerer's view of their
    names and query terms is StoresRetriever's."""

    def __init__(self, parts: list[KnowledgeBase]) -> None:
        super().__init__(parts[0].settings, cast(Retriever, StoresRetriever([p.retriever for p in parts])))
        self.parts = parts

    def available(self) -> bool:
        ready = [p.available() for p in self.parts]
        self.error = None if any(ready) else self.parts[0].error
        return any(ready)

    def search(
        self, query: str, k: int, filters: Filters | None = None, embedding: Any = None, after: str = ""
    ) -> list[RetrievedChunk]:
        hits = [h for p in self.parts for h in p.search(query, k, filters, embedding, after)]
        return sorted(hits, key=lambda h: -h.score)[:k]


class StoresRetriever:
    """What the answerer reads of a retriever, over several: names, aliases and documents of all; a query term's
    weight (IDF) is its highest in any store; the query embedding is the first's (one embedder for every store)."""

    def __init__(self, parts: list[Retriever]) -> None:
        self.parts = parts

    def __getattr__(self, name: str) -> Any:  # embed_query, embed_queries, settings...: the first store's
        return getattr(self.parts[0], name)

    @property
    def entities(self) -> frozenset[str]:
        return frozenset(e for p in self.parts for e in p.entities)

    @property
    def aliases(self) -> AliasTable:
        table = AliasTable()
        for p in self.parts:
            table = table.merged(p.aliases)
        return table

    @property
    def documents(self) -> dict[str, DocRecord]:
        return {d: r for p in self.parts for d, r in p.documents.items()}

    def query_terms(self, query: str) -> list[tuple[list[str], float]]:
        best: dict[tuple[str, ...], float] = {}
        for p in self.parts:
            for group, idf in p.query_terms(query):
                best[tuple(group)] = max(idf, best.get(tuple(group), 0.0))
        return [(list(g), idf) for g, idf in best.items()]

    def keyword_top(self, query: str) -> tuple[float, int]:
        return max((p.keyword_top(query) for p in self.parts), default=(0.0, 0))


def _int(value: Any) -> int | None:
    """A whole number Chroma handed back as a float (46.0) as the int it is; None stays None."""
    return None if value is None else int(value)


def _hit(collection: str, h: RetrievedChunk, files: dict[str, tuple[str, str]]) -> dict[str, Any]:
    m = h.metadata
    doc_id = str(m.get("doc_id", ""))
    file_id, filename = files.get(doc_id, (doc_id, source_name(m.get("source"))))
    attributes = {
        "vector_store_id": "vs_" + collection, "document": m.get("doc_title"), "chapter": _int(h.chapter),
        "chapter_title": m.get("chapter_title"), "chunk_index": _int(m.get("chunk_index")),
        "dense": round(h.scores.get("dense", 0.0), 6), "keyword": round(h.scores.get("keyword", 0.0), 6),
        "fused": round(h.scores.get("fused", 0.0), 6),
    }  # fmt: skip
    return {
        "file_id": file_id, "filename": filename, "score": round(h.score, 6),
        "content": [{"type": "text", "text": h.text}],
        "attributes": {k: v for k, v in attributes.items() if v is not None},
    }  # fmt: skip
