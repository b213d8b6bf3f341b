"""Hybrid retrieval: dense (Chroma) + keyword (BM25) fused by reciprocal rank, with filters, aliases, either Chinese
script and names typed in pinyin."""

from __future__ import annotations

import logging
import re
import threading
import time
from functools import partial
from typing import Any, Literal

import numpy as np

from . import evidence
from .aliases import AliasTable
from .embedding import Embedder, get_embedder
from .errors import UnknownDocumentError
from .events import event_words
from .kb import (
    alias_table,
    embedder_name,
    is_visible,
    keyword_index_for,
    open_store,
    refresh_keyword_index,
    visible_state,
)
from .keyword import KeywordIndex, keyword_query, kin_group, tokenize
from .kin import KinTable, spelled_question
from .normalize import PinyinNames, Script, fold, in_script, script_of, to_traditional
from .pieces import piece_texts
from .query_translation import with_names
from .results import Filters as Filters
from .results import RetrievedChunk as RetrievedChunk
from .settings import IngestSettings
from .store import DocRecord, KnowledgeStore

log = logging.getLogger(__name__)
Mode = Literal["hybrid", "dense", "keyword"]
RRF_K = 60
AGREEMENT_N = 40  # fused chunks that piece agreement re-ranks
_HAN_CHAR = re.compile(r"[\u4e00-\u9fff]")


class Retriever:
    """Searches one collection. Keeps the keyword index and the alias table in step with the store,
    checking at most every `refresh_seconds` whether documents were added or removed."""

    def __init__(
        self,
        settings: IngestSettings,
        collection: str | None = None,
        embedder: Embedder | None = None,
        use_aliases: bool = True,
        alias_dense: bool | None = None,
        refresh_seconds: float = 2.0,
        keyword_weight: float | None = None,
    ) -> None:
        self.settings = settings
        self.store: KnowledgeStore = open_store(settings, collection)
        self.store.check_embedder(embedder.name if embedder else embedder_name(settings))
        self.embedder = embedder or get_embedder(settings.embed_model)
        self.store.check_embedder(self.embedder.name, self.embedder.dim)
        self.use_aliases = use_aliases
        self.alias_dense = settings.alias_dense if alias_dense is None else alias_dense
        self.keyword_weight = settings.keyword_weight if keyword_weight is None else keyword_weight
        self.refresh_seconds = refresh_seconds
        self._index: KeywordIndex = keyword_index_for(settings, self.store)
        self._lock = threading.Lock()
        self._checked = 0.0
        self._visible: set[str] = set()
        self._vectors = -1  # chunks with a vector when last read: an embedding phase adds them to a visible set
        self._no_vector: set[str] = set()  # visible chunks without a vector yet (staged)
        self._records: dict[str, DocRecord] = {}
        self.aliases = AliasTable()
        self.entities: frozenset[str] = frozenset()
        self.kin = KinTable()  # the kin the documents state (曹操 父 曹嵩)
        self.script: Script = "simplified"  # the corpus's dominant script: dense queries are written in it
        self.pinyin = PinyinNames()
        self._folded_aliases = AliasTable()
        # per keyword-index row: the rows of the chunks before and after it, and its (document, chapter) group
        self._prev = self._next = self._chapter_group = self._copy_of = np.zeros(0, dtype=np.int64)
        self._titles: evidence.ChapterTitles | None = None
        self._refresh(force=True)

    def _refresh(self, force: bool = False, now: bool = False) -> None:
        """Follow the store: at most every `refresh_seconds` (or `now`) compare the visible chunk set with the
        one the indexes hold; when it changed (this process or another wrote), reload them."""
        t = time.monotonic()
        if not force and not now and t - self._checked < self.refresh_seconds:
            return
        with self._lock:
            records, ids, fp = visible_state(self.store)
            self._checked = t
            if fp == self._index.fingerprint and not force:
                vectors = self.store.count()
                if vectors != self._vectors:  # vectors written since (another process's embedding phase)
                    self._vectors = vectors
                    self.store.reopen()
                    self._no_vector = self.store.staged_ids() & self._visible
                return
            if not force:  # an embedded store's vector index, read once per process, misses other writers
                self.store.reopen()
            refresh_keyword_index(self.settings, self.store, self._index)
            self._records = records
            self._visible = set(ids)
            self._vectors = self.store.count()
            self._no_vector = self.store.staged_ids() & self._visible
            assert self._index.bm25 is not None
            rows = self._index.bm25.ids
            self._prev, self._next = evidence.neighbour_rows([r.committed for r in records.values()], rows)
            self._copy_of = evidence.copy_rows([(r.text_hash, r.committed) for r in records.values()], rows)
            self._chapter_group = groups = evidence.chapter_groups(self._index.doc_ids, self._index.chapters)
            tok = partial(tokenize, method=self._index.method)  # titles: read once per refresh, a chunk a chapter
            tt = self.settings.keyword_title_weight and evidence.ChapterTitles.of_rows(groups, rows, self.store, tok)
            self._titles = tt or None
            self.aliases = alias_table(self.settings, records.values())
            names = [e for r in records.values() for e in r.entities] + [n for g in self.aliases.groups for n in g]
            self.entities = frozenset(names)
            self.kin = KinTable((t for r in records.values() for t in r.kin), self.aliases.groups)
            self._folded_aliases = AliasTable([fold(n) for n in g] for g in self.aliases.groups)
            self.pinyin = PinyinNames(list(dict.fromkeys(names)))  # most frequent first within each document
            sample = ids[:: max(1, len(ids) // 16)][:16]
            self.script = script_of(c.text for c in self.store.get_chunks(sample)) if sample else "simplified"

    def _check_documents(self, doc_ids: list[str] | None) -> None:
        """A search restricted to documents the collection does not have (any more) is the caller's mistake.
        Asked of the store now: another process may have added or removed them since the last refresh."""
        if not doc_ids:
            return
        now = {i for i, r in self.store.records(doc_ids).items() if is_visible(r)}
        if now != {d for d in doc_ids if d in self._records}:
            self._refresh(now=True)
        unknown = [d for d in doc_ids if d not in now]
        if unknown:
            raise UnknownDocumentError(
                f"no document {', '.join(map(repr, unknown))} in collection {self.store.name!r} (removed, or never "
                f"added): list the documents with `ingest list --collection {self.store.name}` or GET /v1/kb/documents"
            )

    @property
    def documents(self) -> dict[str, DocRecord]:
        # Refreshed like the indexes: another process (a second service replica, the `ingest` CLI) may have
        # changed the store since, and callers decide from this whether the knowledge base is empty.
        self._refresh()
        return self._records

    def expand(self, query: str) -> list[str]:
        """The other names of the entities the query names, and the names of the kin it asks after (曹操的父亲 ->
        曹嵩): what the dense query adds."""
        return [*self.aliases.expansions(query), *self.kin_names(query)] if self.use_aliases else []

    def _kin(self, query: str) -> tuple[list[str], str]:
        """The relatives the query asks after, and the query without their kin words (KinTable.resolve); a query
        in Latin letters asks in the Chinese its names and words translate to (Cao Cao's father -> 曹操的父亲)."""
        if not (self.settings.kin_relations and self.use_aliases):
            return [], query
        folded = fold(query)
        chinese = _HAN_CHAR.search(folded) is not None
        asked = folded if chinese else spelled_question(self.with_names(query)[len(query) :].split(), self.entities)
        kin, rest = self.kin.resolve(asked)
        return kin, rest if kin and chinese else query

    def kin_names(self, query: str) -> list[str]:
        """The names of the kin the query asks after that the documents state (曹操的父亲 -> 曹嵩: KinTable)."""
        return self._kin(query)[0]

    def with_names(self, query: str, translate: bool = True) -> str:
        """The query with the names it spells in pinyin and (`translate`) its English words as Chinese words."""
        idf = self._index.bm25.idf if self._index.bm25 is not None and translate else None
        return with_names(query, self.pinyin if self.use_aliases else None, idf, self.settings.query_translation_words)

    def embed_query(self, query: str) -> np.ndarray:
        """The dense query vector `retrieve` uses (aliases appended); callers may compute it once and reuse it."""
        return self.embed_queries([query])[0]

    def embed_queries(self, queries: list[str]) -> np.ndarray:
        texts = []
        for q in queries:
            q = in_script(self.with_names(q), self.script)
            extra = self.expand(q)
            texts.append(q + ("（" + "、".join(extra) + "）" if extra and self.alias_dense else ""))
        return self.embedder.embed_queries(texts)

    def keyword_top(self, query: str) -> tuple[float, int]:
        """The best chunk's BM25 score for the query and the number of query tokens: how well the corpus
        matches the words of a message, at the cost of one sparse column sum."""
        self._refresh()
        if self._index.bm25 is None:
            return 0.0, 0
        tokens, synonyms = self._keyword_query(query, translate=False)  # the router was fitted on these
        scores = self._index.bm25.scores(tokens, synonyms)
        return (float(scores.max()) if len(scores) else 0.0), len(tokens) + len(synonyms)

    def query_terms(self, query: str) -> list[tuple[list[str], float]]:
        """The query's content terms for matching sentences: each a group of interchangeable tokens (an entity's
        names, or one word's bigram) with its IDF in the corpus, 0 for a term the corpus does not have (牛顿, 定律:
        evidence that the query is about something else). Unigrams only when there is no bigram."""
        self._refresh()
        if self._index.bm25 is None:
            return []
        kin, rest = self._kin(query)
        tokens, synonyms = self._keyword_query(rest, translate=False)  # what it names, not dictionary guesses
        synonyms += event_words(query) if self.settings.event_words else []  # 遇害, 寿六十六岁
        groups = [[t] for t in tokens if len(t) > 1] or [[t] for t in tokens]
        groups += [[t for t in g if len(t) > 1] or g for g in synonyms]
        kin_tokens = [t for g in kin_group(kin, self._index.method) for t in g]
        idf = self._index.bm25.idf({*kin_tokens, *(t for g in groups for t in g)})
        out = [(g, max(idf[t] for t in g)) for g in groups]
        if kin_tokens:  # the relatives by their whole names (诸葛瑾, not 诸葛), weighted as their rarest token
            out.append((kin, max(idf[t] for t in kin_tokens)))
        if self.script == "traditional":  # terms are matched against the passages' own text
            out = [([to_traditional(t) for t in g], w) for g, w in out]
        return out

    def _keyword_query(self, query: str, translate: bool = True) -> tuple[list[str], list[list[str]]]:
        """Tokens and synonym groups of the folded query (index tokens are folded too), names in pinyin included."""
        aliases = self._folded_aliases if self.use_aliases else None
        return keyword_query(fold(self.with_names(query, translate)), aliases, self._index.method)

    def retrieve(
        self,
        query: str,
        k: int = 5,
        filters: Filters | None = None,
        mode: Mode = "hybrid",
        query_embedding: np.ndarray | None = None,
    ) -> list[RetrievedChunk]:
        """Top-k chunks for the query, best first, each with its dense/keyword/fused scores and ranks."""
        self._refresh()
        filters = filters or Filters()
        self._check_documents(filters.doc_ids)
        pool = max(2 * k, self.settings.fusion_pool)
        dense: list[tuple[str, float]] = []
        texts: dict[str, tuple[str, dict[str, Any]]] = {}
        if mode in ("hybrid", "dense"):
            if query_embedding is None:
                query_embedding = self.embed_query(query)
            dense = self._dense(query_embedding, pool, filters, texts)
        keyword: list[tuple[str, float]] = []
        bm25 = self._index.bm25 if mode in ("hybrid", "keyword") else None
        mask = self._index.mask(filters.doc_ids, filters.chapter_min, filters.chapter_max) if bm25 else None
        if bm25 is not None:
            kin, rest = self._kin(query)  # 曹嵩 for 曹操的父亲, and 父亲 no more
            tokens, synonyms = self._keyword_query(rest)
            synonyms += event_words(query) if self.settings.event_words else []  # 遇害 崩 薨… for a death
            synonyms += kin_group(kin, self._index.method)
            raw = bm25.scores(tokens, synonyms)
            titles = self._title_scores(tokens, synonyms)
            keyword = self._keyword_ranked(self._with_context(raw, titles), mask, pool)
        # while an embedding phase runs the dense side ranks only the chunks embedded so far: it counts in
        # proportion (with a few vectors its top ranks are noise: hybrid hit@5 0.805 vs keyword 0.829, BENCHMARKS)
        coverage = min(1.0, self._vectors / len(self._visible)) if self._visible and self._vectors >= 0 else 1.0
        order = self._fuse(dense, keyword, coverage, mode)
        s = self.settings
        if bm25 is not None and s.feedback_terms and order:
            # pseudo-relevance feedback: the words the first pass's best chunks share join the BM25 query
            best = [cid for cid, _ in order[: s.feedback_docs]]
            self._fill_texts(best, texts)
            feedback = [tokenize(texts[c][0], self._index.method) for c in best if c in texts]
            own = {*tokens, *(t for g in synonyms for t in g)}
            terms = evidence.expansion_terms(feedback, own, bm25.idf, s.feedback_terms)
            if terms:
                weight = s.feedback_weight * (len(set(tokens)) + len(synonyms))
                scores = evidence.with_terms(raw, terms, lambda t: bm25.scores([t]), weight)
                keyword = self._keyword_ranked(self._with_context(scores, titles), mask, pool)
                order = self._fuse(dense, keyword, coverage, mode)
        if mode == "hybrid" and (agree := s.piece_agreement_weight) and order:
            of = partial(self._pieces_of, embedding=query_embedding, texts=texts)
            order = evidence.with_agreement(order, AGREEMENT_N, agree, s.rrf_k, self.query_terms(query), of)
        return self._top_distinct(order, k, texts, mode)

    def _pieces_of(self, ids: list[str], embedding: Any, texts: dict[str, tuple[str, dict[str, Any]]]) -> dict:
        """Each chunk's piece texts and their similarities to the query (none when the store has no pieces)."""
        size = self.store.piece_chars(self.settings.embed_piece_chars) if self._vectors > 0 else 0
        self._fill_texts(ids, texts)
        chunks = {c: texts[c] for c in ids if c in texts and size}
        return piece_texts(self.store, chunks, embedding, size, self.settings.embed_overlap)

    def _dense(
        self, embedding: np.ndarray, pool: int, filters: Filters, texts: dict[str, tuple[str, dict[str, Any]]]
    ) -> list[tuple[str, float]]:
        """The dense side's best `pool` chunks, one of each text: copies of a document kept beside their original
        would fill the pool twice over (fewer than k distinct passages), so the search reads further past them."""
        n = pool + 8
        while True:
            hits = self.store.query(embedding, n, filters.chroma(), self.settings.dense_piece_top)
            best: dict[str, Any] = {}
            for c in hits:  # unfinished versions are not served
                same = str(c.metadata.get("content_hash") or c.text)
                if c.chunk_id in self._visible and (same not in best or c.chunk_id < best[same].chunk_id):
                    best[same] = c  # the smallest id stands for a text's copies, as on the keyword side
            if len(best) >= pool or len(hits) < n:  # enough, or the store has no more
                texts.update((c.chunk_id, (c.text, c.metadata)) for c in best.values())
                return [(c.chunk_id, c.score) for c in best.values()][:pool]
            n *= 2

    def _with_context(self, scores: np.ndarray, titles: np.ndarray) -> np.ndarray:
        """A chunk's BM25 with its neighbours', its chapter's and its chapter title's added (at the settings' weights;
        0 leaves it out)."""
        groups = self._chapter_group
        if len(self._prev) != len(scores) or len(groups) != len(scores):
            return scores  # another thread's refresh is between the index and these rows
        s = self.settings
        scores = evidence.with_neighbours(scores, self._prev, self._next, s.keyword_neighbour_weight)
        scores = evidence.with_chapter(scores, groups, s.keyword_chapter_weight)
        return evidence.with_titles(scores, groups, titles, s.keyword_title_weight)

    def _title_scores(self, tokens: list[str], synonyms: list[list[str]]) -> np.ndarray:
        """Per chapter group, how well its title matches the query (empty when titles are not used)."""
        if self._titles is None or self._index.bm25 is None:
            return np.zeros(0)
        idf = self._index.bm25.idf({*tokens, *(t for g in synonyms for t in g)})
        return self._titles.scores(tokens, synonyms, idf, unseen=self._index.bm25.rarest_idf())

    def _keyword_ranked(self, scores: np.ndarray, mask: np.ndarray | None, pool: int) -> list[tuple[str, float]]:
        """The best `pool` chunks by keyword score (those the filter's mask lets through, with a score above 0)."""
        assert self._index.bm25 is not None
        ids = self._index.bm25.ids
        if mask is not None:
            scores = np.where(mask, scores, 0.0)
        if len(self._copy_of) == len(scores):  # a copy's row counts only where the one standing for it cannot
            stands = np.maximum(self._copy_of, 0)
            scores = np.where((self._copy_of >= 0) & (mask[stands] if mask is not None else True), 0.0, scores)
        n = len(scores)
        top = np.argpartition(-scores, min(pool, n - 1))[:pool] if n > pool else np.arange(n)
        out: list[tuple[str, float]] = []
        for r in top[np.argsort(-scores[top])]:
            if scores[r] <= 0:
                break
            out.append((ids[r], float(scores[r])))
        return out

    def _fuse(
        self, dense: list[tuple[str, float]], keyword: list[tuple[str, float]], coverage: float, mode: Mode
    ) -> list[tuple[str, dict[str, float]]]:
        no_vector = self._no_vector if mode == "hybrid" else frozenset()
        return evidence.fuse(dense, keyword, coverage, self.keyword_weight, self.settings.rrf_k, no_vector)

    def _fill_texts(self, ids: list[str], texts: dict[str, tuple[str, dict[str, Any]]]) -> None:
        """Read the chunks of `ids` that `texts` lacks from the store into it."""
        missing = [cid for cid in ids if cid not in texts]
        if missing:
            texts.update((c.chunk_id, (c.text, c.metadata)) for c in self.store.get_chunks(missing))

    def _top_distinct(
        self, ranked: list[tuple[str, dict[str, float]]], k: int, texts: dict[str, tuple[str, dict[str, Any]]],
        mode: Mode,
    ) -> list[RetrievedChunk]:
        """The first `k` of `ranked` whose text is not already among them: a copy of a document kept beside its
        original (reported at ingest) would otherwise fill the top-k with the same passage twice."""
        out: list[RetrievedChunk] = []
        seen: set[str] = set()
        start = 0
        while len(out) < k and start < len(ranked):
            batch = ranked[start : start + k - len(out)]
            start += len(batch)
            self._fill_texts([cid for cid, _ in batch], texts)
            for cid, sc in batch:
                if cid not in texts:  # removed by another process since the last refresh
                    self._checked = 0.0
                    continue
                text, meta = texts[cid]
                same = str(meta.get("content_hash") or text)
                if same in seen:
                    continue
                seen.add(same)
                main = sc["fused"] if mode == "hybrid" else sc.get(mode, 0.0)
                out.append(RetrievedChunk(cid, text, meta, float(main), {k2: float(v) for k2, v in sc.items()}))
        return out


_RETRIEVERS: dict[tuple[str, str], Retriever] = {}


def retrieve(
    query: str,
    k: int = 5,
    filters: Filters | None = None,
    *,
    collection: str | None = None,
    mode: Mode = "hybrid",
    settings: IngestSettings | None = None,
) -> list[RetrievedChunk]:
    """Library entry point: search a collection (the model and indexes stay loaded between calls)."""
    from .settings import get_settings

    settings = settings or get_settings()
    key = (str(settings.store_path) + "|" + str(settings.chroma_url), collection or settings.collection)
    if key not in _RETRIEVERS:
        _RETRIEVERS[key] = Retriever(settings, collection)
    return _RETRIEVERS[key].retrieve(query, k, filters, mode)
