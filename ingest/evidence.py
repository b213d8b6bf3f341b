"""Keyword evidence beyond a chunk's own words: its neighbours' and its chapter's BM25, its chapter title,
pseudo-relevance feedback (RM3-style expansion terms from the first pass's best chunks), and piece agreement between
the keyword and dense sides. Weight 0 turns one off; the defaults (IngestSettings: neighbours 0.5, titles 1.0 and
piece agreement 0.5 on, chapter and feedback off) and what each measured on the dev set's tuning and held-out halves
are in BENCHMARKS.md ("Retrieval on the dev set's held-out half")."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from itertools import pairwise
from typing import Any

import numpy as np

from .keyword import STOPWORDS


def neighbour_rows(order: Sequence[Sequence[str]], ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """For each index row (`ids`), the row of the chunk before it and after it in its document (-1: none or not
    indexed); `order` holds each document's chunk ids in reading order."""
    row = {c: r for r, c in enumerate(ids)}
    prev = np.full(len(ids), -1, dtype=np.int64)
    nxt = np.full(len(ids), -1, dtype=np.int64)
    for chunk_ids in order:
        rows = [row.get(c, -1) for c in chunk_ids]
        for a, b in pairwise(rows):
            if a >= 0 and b >= 0:
                nxt[a], prev[b] = b, a
    return prev, nxt


def copy_rows(docs: Sequence[tuple[str, Sequence[str]]], ids: Sequence[str]) -> np.ndarray:
    """For each index row, the row that stands for it when its document is a copy of another (the same text hash
    and as many chunks; a chunk stands for its copies when its id is the smallest), else -1. `docs`: each document's
    text hash and chunk ids in reading order. Copies kept beside their original would fill a keyword pool twice."""
    row = {c: r for r, c in enumerate(ids)}
    out = np.full(len(ids), -1, dtype=np.int64)
    groups: dict[tuple[str, int], list[Sequence[str]]] = {}
    for text_hash, chunk_ids in docs:
        if text_hash:
            groups.setdefault((text_hash, len(chunk_ids)), []).append(chunk_ids)
    for same in groups.values():
        for chunks in zip(*same, strict=True) if len(same) > 1 else ():
            rows = sorted((c, row[c]) for c in chunks if c in row)
            for _, r in rows[1:]:
                out[r] = rows[0][1]
    return out


def chapter_groups(doc_ids: np.ndarray, chapters: np.ndarray) -> np.ndarray:
    """One number per (document, chapter) pair of the index rows; -1 for rows outside any chapter."""
    if not len(chapters):
        return np.zeros(0, dtype=np.int64)
    keys = np.array([f"{d}\0{c}" for d, c in zip(doc_ids, chapters, strict=True)])
    _, group = np.unique(keys, return_inverse=True)
    return np.where(chapters >= 0, group, -1).astype(np.int64)


def with_neighbours(scores: np.ndarray, prev: np.ndarray, nxt: np.ndarray, weight: float) -> np.ndarray:
    """Each chunk's score plus `weight` times its better neighbour's: a question's words often fall on both sides of
    a chunk boundary (the event in one chunk, the detail asked for in the next)."""
    if not weight or not len(scores):
        return scores
    before = np.where(prev >= 0, scores[np.maximum(prev, 0)], 0.0)
    after = np.where(nxt >= 0, scores[np.maximum(nxt, 0)], 0.0)
    return scores + weight * np.maximum(before, after)


def with_chapter(scores: np.ndarray, groups: np.ndarray, weight: float, top: int = 3) -> np.ndarray:
    """Each chunk's score plus `weight` times the mean of the `top` best scores of its chapter (`groups`: a chapter
    number per row, one value per document and chapter; -1 rows, outside any chapter, get nothing)."""
    if not weight or not len(scores):
        return scores
    order = np.lexsort((-scores, groups))  # by chapter, best first within it
    g = groups[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    ends = np.r_[starts[1:], len(g)]
    bonus = np.zeros(len(scores), dtype=np.float64)
    for s, e in zip(starts, ends, strict=True):
        if g[s] >= 0:
            bonus[order[s:e]] = scores[order[s : min(e, s + top)]].mean()
    return scores + weight * bonus


def expansion_terms(
    feedback: Sequence[Sequence[str]],
    query_terms: set[str],
    idf: Callable[[set[str]], dict[str, float]],
    n_terms: int,
) -> list[tuple[str, float]]:
    """The `n_terms` best expansion terms of the feedback chunks' tokens, with weights summing to 1.

    A term's weight is its relevance-model mass (its share of each feedback chunk's tokens, summed over the chunks:
    RM3 with uniform chunk weights) times its IDF: with character n-grams the plain relevance model is topped by the
    novel's common names and words, which every chunk shares. Only multi-character tokens count (single characters
    are too ambiguous to add), never the query's own terms, stopwords or numbers."""
    mass: dict[str, float] = {}
    for tokens in feedback:
        for t, n in Counter(tokens).items():
            if len(t) > 1 and t not in query_terms and t not in STOPWORDS and not t.isdigit():
                mass[t] = mass.get(t, 0.0) + n / len(tokens)
    weights = idf(set(mass))
    scored = sorted(((mass[t] * weights.get(t, 0.0), t) for t in mass), key=lambda x: (-x[0], x[1]))
    best = [(t, s) for s, t in scored[:n_terms] if s > 0]
    total = sum(s for _, s in best)
    return [(t, s / total) for t, s in best] if total else []


def with_terms(
    scores: np.ndarray, terms: Sequence[tuple[str, float]], term_scores: Callable[[str], np.ndarray], weight: float
) -> np.ndarray:
    """`scores` plus `weight` times the terms' weighted BM25 (weights summing to 1: `weight` query terms' worth)."""
    out = scores.astype(np.float64, copy=True)
    for t, w in terms:
        out += weight * w * term_scores(t)
    return out


class ChapterTitles:
    """The chapter titles of a collection (第四十六回 用奇谋孔明借箭 …), searchable by the query's words: a title names
    the chapter's events in words its text may not use (借箭 for a chapter whose text never says it)."""

    def __init__(self, titles: dict[int, str], tokenize: Callable[[str], list[str]], groups: int) -> None:
        self.groups = groups  # chapter groups are 0 .. groups - 1; `titles` has those that have a title
        postings: dict[str, list[int]] = {}
        for group, title in titles.items():
            for t in set(tokenize(title)):
                if len(t) > 1:  # single characters of a title match too much
                    postings.setdefault(t, []).append(group)
        self._postings = {t: np.asarray(g, dtype=np.int64) for t, g in postings.items()}

    @classmethod
    def of_rows(
        cls, groups: np.ndarray, ids: Sequence[str], store: Any, tokenize: Callable[[str], list[str]]
    ) -> ChapterTitles:
        """The title of each chapter group (`groups`: one per index row of `ids`), read from the store's chunks,
        one of each group (every chunk's metadata holds it)."""
        numbers, first = np.unique(groups, return_index=True)
        group_of = {ids[r]: int(g) for g, r in zip(numbers, first, strict=True) if g >= 0}
        titles = {}
        for c in store.get_chunks(list(group_of)):
            if c.metadata.get("chapter_title"):
                titles[group_of[c.chunk_id]] = str(c.metadata["chapter_title"])
        return cls(titles, tokenize, int(numbers.max(initial=-1)) + 1)

    def scores(
        self, tokens: Sequence[str], synonyms: Sequence[Sequence[str]], idf: dict[str, float], unseen: float = 0.0
    ) -> np.ndarray:
        """Per chapter group: the IDF of the query's words in its title (a synonym group counts once, as its best); a
        word no chunk's text has (舌战群儒 is the novel's title for a chapter that never says it) weighs `unseen`."""
        idf = {t: w or unseen for t, w in idf.items()}
        out = np.zeros(self.groups, dtype=np.float64)
        for t in dict.fromkeys(tokens):
            if t in self._postings:
                out[self._postings[t]] += idf.get(t, 0.0)
        for group in synonyms:
            best = np.zeros(self.groups, dtype=np.float64)
            for t in dict.fromkeys(group):
                if t in self._postings:
                    np.maximum.at(best, self._postings[t], idf.get(t, 0.0))
            out += best
        return out


def with_titles(scores: np.ndarray, groups: np.ndarray, title_scores: np.ndarray, weight: float) -> np.ndarray:
    """Each chunk's score plus `weight` times its chapter title's score (`groups`: the chapter group of each row)."""
    if not weight or not len(scores) or not len(title_scores):
        return scores
    known = (groups >= 0) & (groups < len(title_scores))
    bonus = np.where(known, title_scores[np.clip(groups, 0, len(title_scores) - 1)], 0.0)
    return scores + weight * bonus


def fuse(
    dense: list[tuple[str, float]], keyword: list[tuple[str, float]], dense_weight: float, keyword_weight: float,
    k: float, no_vector: AbstractSet[str] = frozenset(),
) -> list[tuple[str, dict[str, float]]]:
    """Weighted reciprocal rank fusion of the dense and keyword rankings ((chunk id, score), best first): each chunk
    gets weight / (k + rank) from each side that ranks it; best first, with each side's score and rank.

    A chunk in `no_vector` (its document's embedding phase has not reached it) cannot be ranked by the dense side:
    its keyword rank stands in for its dense rank, so a document still being embedded competes on its words with
    the embedded ones instead of losing to any chunk that both sides rank."""
    fused: dict[str, dict[str, float]] = {}
    for name, ranked, weight in (("dense", dense, dense_weight), ("keyword", keyword, keyword_weight)):
        for rank, (cid, score) in enumerate(ranked, start=1):
            entry = fused.setdefault(cid, {"fused": 0.0})
            entry[name] = score
            entry[f"{name}_rank"] = rank
            entry["fused"] += weight / (k + rank)
            if name == "keyword" and cid in no_vector:
                entry["fused"] += dense_weight / (k + rank)
    return sorted(fused.items(), key=lambda kv: -kv[1]["fused"])


def with_agreement(
    order: list[tuple[str, dict[str, float]]], n: int, weight: float, k: float,
    terms: Sequence[tuple[Sequence[str], float]], pieces_of: Callable[[list[str]], dict[str, tuple[list[str], Any]]],
) -> list[tuple[str, dict[str, float]]]:
    """The fused ranking with its first `n` re-ranked by piece agreement: a chunk whose piece holding the most of
    the query's terms (by IDF) is also its piece nearest the query gets `weight` times that piece's share of the
    query's IDF, in rank-1 votes (1 / (k + 1)). Both sides then point at the same sentences of the chunk, not at
    one's names and the other's topic. `pieces_of`: each chunk's piece texts and their similarities to the query."""
    total = sum(w for _, w in terms)
    if not weight or not total or not order:
        return order
    head = order[:n]
    pieces = pieces_of([cid for cid, _ in head])
    for cid, sc in head:
        texts, sims = pieces.get(cid, ([], np.zeros(0)))
        if not texts or len(texts) != len(sims):
            continue
        cover = [sum(w for group, w in terms if any(t in text for t in group)) for text in texts]
        best = int(np.argmax(cover))
        if cover[best] > 0 and best == int(np.argmax(sims)):
            sc["agreement"] = cover[best] / total
            sc["fused"] += weight * sc["agreement"] / (k + 1)
    return sorted(head, key=lambda kv: -kv[1]["fused"]) + order[n:]
