"""Okapi BM25 over segments of raw term frequencies, scored at query time with the collection's current N, df and
average length, so that adding or removing chunks touches only their own segment (Lucene's design).

bm25s, which the index used before, stores per-(chunk, term) scores that depend on the whole collection's idf and
average length, and cannot add or delete documents (xhluca/bm25s#5, #19, #98): every change rebuilt it whole.
Here a segment is immutable once built (its chunks' term counts, as a column-compressed matrix); deleting a chunk
marks its row dead; `merge` rewrites a few segments (and drops their dead rows) into one. The scores equal a
from-scratch bm25s index (method "lucene") over the live chunks; tests/ingest/test_keyword.py checks it.
"""

from __future__ import annotations

import copy
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

_POSTINGS = ("terms", "indptr", "indices", "tf")


class Segment:
    """The term counts of some chunks (column-compressed: for each term the rows that have it and how often) with
    each row's chunk id, document id, chapter and length in tokens. Only `dead` (deleted rows) ever changes.

    The term counts may stay on disk until first needed (`load` reads them): a writer that only appends a segment
    and marks dead rows never reads the others'."""

    def __init__(
        self,
        name: str,
        ids: list[str],
        doc_ids: list[str],
        chapters: np.ndarray,
        lens: np.ndarray,
        terms: list[str] | None = None,
        indptr: np.ndarray | None = None,
        indices: np.ndarray | None = None,
        tf: np.ndarray | None = None,
        load: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.name, self.ids, self.doc_ids, self.chapters, self.lens = name, ids, doc_ids, chapters, lens
        self._postings: tuple[list[str], np.ndarray, np.ndarray, np.ndarray] | None = None
        if terms is not None and indptr is not None and indices is not None and tf is not None:
            self._postings = (terms, indptr, indices, tf)
        self._load = load
        self.dead = np.zeros(len(ids), dtype=bool)
        self.saved = False  # its files are on disk (then never rewritten: a name means one content)
        self._gids: np.ndarray | None = None  # the collection vocabulary's id of each term (set by BM25)
        self._order: np.ndarray | None = None
        self._live_df: np.ndarray | None = None

    @property
    def loaded(self) -> bool:
        return self._postings is not None

    def postings(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """terms, indptr, indices (rows), tf: read from disk on first use."""
        if self._postings is None:
            assert self._load is not None, f"segment {self.name} has no term counts and nowhere to read them"
            state = self._load()
            self._postings = (state["terms"], state["indptr"], state["indices"], state["tf"])
        return self._postings

    @property
    def terms(self) -> list[str]:
        return self.postings()[0]

    @property
    def indptr(self) -> np.ndarray:
        return self.postings()[1]

    @property
    def indices(self) -> np.ndarray:
        return self.postings()[2]

    @property
    def tf(self) -> np.ndarray:
        return self.postings()[3]

    @classmethod
    def from_tokens(
        cls,
        name: str,
        ids: Sequence[str],
        tokens: Iterable[Sequence[str]],
        doc_ids: Sequence[str] | None = None,
        chapters: Sequence[int] | None = None,
    ) -> Segment:
        vocab: dict[str, int] = {}
        # typed arrays, not lists: 12 bytes a (chunk, term) pair instead of ~80 (tens of millions at 50x)
        rows, cols, counts, lens = array("i"), array("i"), array("f"), array("i")
        for row, toks in enumerate(tokens):
            lens.append(len(toks))
            for t, c in Counter(toks).items():
                rows.append(row)
                cols.append(vocab.setdefault(t, len(vocab)))
                counts.append(c)
        n = len(ids)
        return cls._from_coo(
            list(vocab),
            np.frombuffer(rows, dtype=np.int32).copy(),
            np.frombuffer(cols, dtype=np.int32).copy(),
            np.frombuffer(counts, dtype=np.float32).copy(),
            name=name,
            ids=list(ids),
            doc_ids=list(doc_ids) if doc_ids is not None else [""] * n,
            chapters=np.asarray(chapters if chapters is not None else [-1] * n, dtype=np.int32),
            lens=np.frombuffer(lens, dtype=np.int32).copy(),
        )

    @classmethod
    def _from_coo(cls, terms: list[str], rows: np.ndarray, cols: np.ndarray, tf: np.ndarray, **rows_of: Any) -> Segment:
        """From (row, term, count) triples in row order within each term (both callers produce them so: a build row
        by row, a merge segment by segment); `rows_of` holds the name and the per-row lists of __init__."""
        order = np.argsort(cols, kind="stable")  # by term, rows ascending within a term (a lexsort's order)
        indptr = np.zeros(len(terms) + 1, dtype=np.int64)
        np.cumsum(np.bincount(cols, minlength=len(terms)), out=indptr[1:])
        return cls(terms=terms, indptr=indptr, indices=rows[order], tf=tf[order], **rows_of)

    @property
    def live(self) -> int:
        return len(self.ids) - int(self.dead.sum())

    def kill(self, rows: Iterable[int]) -> None:
        self.dead[list(rows)] = True
        self._live_df = None

    def live_df(self) -> np.ndarray:
        """How many live rows have each term."""
        if self._live_df is None:
            if not self.dead.any():
                self._live_df = np.diff(self.indptr)
            else:
                term_of = np.repeat(np.arange(len(self.terms)), np.diff(self.indptr))
                self._live_df = np.bincount(term_of[~self.dead[self.indices]], minlength=len(self.terms))
        return self._live_df

    def column(self, gid: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows having the term with collection id `gid`, and its count in each."""
        assert self._gids is not None and self._order is not None
        pos = int(np.searchsorted(self._gids, gid, sorter=self._order))
        if pos == len(self._order) or self._gids[self._order[pos]] != gid:
            return self.indices[:0], self.tf[:0]
        j = self._order[pos]
        return self.indices[self.indptr[j] : self.indptr[j + 1]], self.tf[self.indptr[j] : self.indptr[j + 1]]

    def rows_state(self) -> dict[str, object]:
        """What its rows file holds (the dead rows are the manifest's)."""
        return {k: getattr(self, k) for k in ("ids", "doc_ids", "chapters", "lens")}

    def postings_state(self) -> dict[str, object]:
        return dict(zip(_POSTINGS, self.postings(), strict=True))


def merge(name: str, segments: Sequence[Segment]) -> Segment:
    """One segment holding the live rows of `segments`, in order; terms no live row has are dropped.

    Memory: about 30 bytes a (row, term) pair of the result at its peak (int32 rows and term ids, float32 counts, one
    int64 sort order), the merges inside a large ingest being what its memory grows with."""
    vocab: dict[str, int] = {}
    rows, cols, tfs = [], [], []
    offset = 0
    for seg in segments:
        alive = ~seg.dead
        new_row = (np.cumsum(alive) - 1 + offset).astype(np.int32)
        to_col = np.fromiter((vocab.setdefault(t, len(vocab)) for t in seg.terms), np.int32, len(seg.terms))
        col = np.repeat(to_col, np.diff(seg.indptr))
        if alive.all():
            rows.append(new_row[seg.indices])
            tfs.append(seg.tf)
        else:
            keep = alive[seg.indices]
            rows.append(new_row[seg.indices[keep]])
            col = col[keep]
            tfs.append(seg.tf[keep])
        cols.append(col)
        offset += int(alive.sum())
    # one array each, the parts let go at once (a merge's memory is a few arrays of the result's size)
    col = np.concatenate(cols) if cols else np.zeros(0, np.int32)
    row = np.concatenate(rows) if rows else np.zeros(0, np.int32)
    tf = np.concatenate(tfs) if tfs else np.zeros(0, np.float32)
    del cols, rows, tfs
    used = np.bincount(col, minlength=len(vocab)) > 0
    col = (np.cumsum(used) - 1).astype(np.int32)[col]
    terms = [t for t, u in zip(vocab, used, strict=True) if u]
    pick = [~s.dead for s in segments]
    return Segment._from_coo(
        terms,
        row,
        col,
        tf,
        name=name,
        ids=[i for s, p in zip(segments, pick, strict=True) for i, ok in zip(s.ids, p, strict=True) if ok],
        doc_ids=[d for s, p in zip(segments, pick, strict=True) for d, ok in zip(s.doc_ids, p, strict=True) if ok],
        chapters=np.concatenate(
            [s.chapters[p] for s, p in zip(segments, pick, strict=True)] or [np.zeros(0, np.int32)]
        ),
        lens=np.concatenate([s.lens[p] for s, p in zip(segments, pick, strict=True)] or [np.zeros(0, np.int32)]),
    )


class BM25:
    """Okapi BM25 (Lucene's variant: idf = ln(1 + (N - df + 0.5) / (df + 0.5))) over the live rows of its
    segments, with synonym groups on top. Scores are on the classic scale (the Lucene term weight times k1 + 1),
    which the router's fitted weights expect. Rows (`ids`, `doc_ids`, `chapters`) are the live rows, segment by
    segment."""

    def __init__(self, ids: Sequence[str] = (), tokens: Sequence[Sequence[str]] = (), k1: float = 1.2, b: float = 0.75):
        self.k1, self.b, self._scale = k1, b, k1 + 1
        self.vocab: dict[str, int] = {}  # grows only: segments keep their term ids while this object lives
        self.segments: list[Segment] = []
        self._serve([Segment.from_tokens("memory", ids, tokens)] if len(ids) else [])

    def with_segments(self, segments: list[Segment]) -> BM25:
        """A new index over these segments (each with its dead rows marked), sharing this one's term ids; this one
        is left as it was, so that a query running in another thread meanwhile sees one consistent index."""
        new = copy.copy(self)
        new._serve(segments)
        return new

    def _serve(self, segments: list[Segment]) -> None:
        for seg in segments:
            if seg._gids is None:
                seg._gids = np.fromiter(
                    (self.vocab.setdefault(t, len(self.vocab)) for t in seg.terms), np.int64, len(seg.terms)
                )
                seg._order = np.argsort(seg._gids, kind="stable")
        self.segments = segments
        self._df = np.zeros(len(self.vocab), dtype=np.int64)
        for seg in segments:
            self._df[seg._gids] += seg.live_df()
        alive = [~s.dead for s in segments]
        self._offsets = np.cumsum([0] + [len(s.ids) for s in segments])
        self._live_rows = np.flatnonzero(np.concatenate(alive)) if segments else np.zeros(0, np.int64)
        self.ids = [i for s, a in zip(segments, alive, strict=True) for i, ok in zip(s.ids, a, strict=True) if ok]
        doc_ids = [d for s, a in zip(segments, alive, strict=True) for d, ok in zip(s.doc_ids, a, strict=True) if ok]
        self.doc_ids = np.array(doc_ids, dtype=object)
        self.chapters = np.concatenate([s.chapters for s in segments]).astype(np.int32)[self._live_rows] if (
            segments) else np.zeros(0, np.int32)  # fmt: skip
        lens = np.concatenate([s.lens for s in segments]).astype(np.float64) if segments else np.zeros(0)
        n = len(self.ids)
        avgdl = float(lens[self._live_rows].sum()) / n if n else 1.0
        # the length part of each row's BM25 denominator, as bm25s computes it (float32)
        self._norm = (self.k1 * ((1 - self.b) + self.b * lens / max(avgdl, 1e-9))).astype(np.float32)

    def _column(self, gid: int) -> np.ndarray:
        """The Lucene term weight of one term for every row (dead rows included)."""
        out = np.zeros(int(self._offsets[-1]), dtype=np.float32)
        idf = np.float32(self._idf(int(self._df[gid])))
        for seg, off in zip(self.segments, self._offsets, strict=False):
            rows, tf = seg.column(gid)
            if len(rows):
                at = rows + off
                out[at] += idf * (tf / (self._norm[at] + tf))
        return out

    def scores(self, query_tokens: Sequence[str], synonyms: Sequence[Sequence[str]] = ()) -> np.ndarray:
        """BM25 of each chunk. Each synonym group (the names of one entity) counts once, as its best-scoring
        member, so an entity with many names does not outweigh the other words of the query."""
        out = np.zeros(int(self._offsets[-1]), dtype=np.float32)
        for t in dict.fromkeys(query_tokens):
            if self._known(t):
                out += self._column(self.vocab[t])
        for group in synonyms:
            cols = [self._column(self.vocab[t]) for t in dict.fromkeys(group) if self._known(t)]
            if cols:
                out += np.max(cols, axis=0)
        return out[self._live_rows] * np.float32(self._scale)

    def _known(self, t: str) -> bool:
        j = self.vocab.get(t)
        return j is not None and self._df[j] > 0

    def _idf(self, df: int) -> float:
        n = len(self.ids)
        return float(np.log(1.0 + (n - df + 0.5) / (df + 0.5)))

    def rarest_idf(self) -> float:
        """The IDF of a token only one chunk holds: the most any token of the corpus can weigh."""
        return self._idf(1)

    def idf(self, tokens: Iterable[str]) -> dict[str, float]:
        """Inverse document frequency of each known token (0 for tokens the corpus does not have)."""
        return {t: self._idf(int(self._df[self.vocab[t]])) if self._known(t) else 0.0 for t in tokens}
