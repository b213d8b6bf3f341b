"""Keyword side of hybrid search: BM25 over a collection's visible chunks, persisted on disk.

Two tokenisers: character unigrams + bigrams of Chinese runs ("ngram", the default: it measured better on
the 三国演义 dev set, whose questions are modern Chinese and whose text is classical), and jieba's
search-mode words ("jieba"). Both read the folded text (normalize.fold: one script, NFKC widths) plus the value
of each Chinese numeral in digits, so 關羽 finds 关羽 and 3000 finds 三千. See BENCHMARKS.md.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import pickle
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np

from .fsio import atomic_open
from .normalize import fold, number_tokens
from .store import StoredChunk

log = logging.getLogger(__name__)

_WORD = re.compile(r"[\w\u4e00-\u9fff]")
# Function words of modern and classical Chinese that carry no topic.
STOPWORDS = set(
    "的 了 是 在 和 与 及 或 也 又 都 就 而 之 其 于 以 为 者 乃 则 矣 乎 哉 焉 耶 曰 吾 汝 我 你 他 她 它 这 那 此 彼 "
    "有 无 不 没有 什么 怎么 怎样 如何 哪里 哪儿 哪个 哪 谁 为什么 为何 吗 呢 吧 啊 呀 么 一个 一 个 被 把 给 让 对 "
    "从 到 向 中 上 下 后 前 时 时候 说 道 问 答 里 去 来 做 用 后来 最后 当时".split()
)
_jieba_lock = threading.Lock()
_jieba_words: set[str] = set()
_pending_words: set[str] = set()


def add_words(words: Iterable[str]) -> None:
    """Teach jieba names (aliases, entities) so they stay whole tokens; applied at the next tokenize."""
    with _jieba_lock:
        _pending_words.update(w for w in words if len(w) >= 2 and w not in _jieba_words)


Tokenizer = Literal["ngram", "jieba"]
_INDEX_FORMAT = "bm25s-2"  # what the pickled index holds (2: folded tokens); another value (or none) means rebuild
_TOKENS_FORMAT = "fold1"  # in the token cache's name: a cache of another tokenisation is never read
_HAN_RUN = re.compile(r"[\u4e00-\u9fff]+|[A-Za-z0-9]+")


def tokenize(text: str, method: Tokenizer = "ngram") -> list[str]:
    """Tokens for BM25 of the folded text: n-grams of Chinese runs (plus ASCII words), or jieba words; then each
    Chinese numeral's value in digits."""
    text = fold(text)
    if method == "jieba":
        return jieba_tokens(text) + number_tokens(text)
    out: list[str] = []
    for run in _HAN_RUN.findall(text):
        if run.isascii():
            out.append(run.lower())
            continue
        out.extend(ch for ch in run if ch not in STOPWORDS)
        out.extend(run[i : i + 2] for i in range(len(run) - 1))
    out.extend(number_tokens(text))
    return out


def jieba_tokens(text: str) -> list[str]:
    """Search-mode jieba tokens (words and their sub-words), without punctuation and function words."""
    from .quiet import load_jieba

    jieba = load_jieba()
    if _pending_words or not jieba.dt.initialized:
        with _jieba_lock:
            for w in _pending_words:
                jieba.add_word(w, freq=20000)
            _jieba_words.update(_pending_words)
            _pending_words.clear()
    return [t for t in jieba.lcut_for_search(text) if _WORD.search(t) and t not in STOPWORDS]


class BM25:
    """Okapi BM25 (Lucene's variant: idf = ln(1 + (N - df + 0.5) / (df + 0.5))), indexed and scored by bm25s,
    with synonym groups on top. Scores are on the classic scale (the Lucene term weight times k1 + 1), which
    the router's fitted weights expect."""

    def __init__(self, ids: Sequence[str], tokens: Sequence[Sequence[str]], k1: float = 1.2, b: float = 0.75):
        import bm25s

        from .quiet import quiet_logger

        quiet_logger("bm25s")
        self.ids = list(ids)
        self._scale = k1 + 1
        self._index = bm25s.BM25(k1=k1, b=b, method="lucene")
        if self.ids:
            self._index.index([list(t) for t in tokens], show_progress=False)
            self.vocab: dict[str, int] = self._index.vocab_dict  # shared, not copied: pickled once
            self._df = np.diff(np.asarray(self._index.scores["indptr"]))
        else:
            self.vocab, self._df = {}, np.zeros(0, dtype=np.int64)

    def _column(self, cols: list[int]) -> np.ndarray:
        return np.asarray(self._index.get_scores_from_ids(cols), dtype=np.float32)

    def scores(self, query_tokens: Sequence[str], synonyms: Sequence[Sequence[str]] = ()) -> np.ndarray:
        """BM25 of each chunk. Each synonym group (the names of one entity) counts once, as its best-scoring
        member, so an entity with many names does not outweigh the other words of the query."""
        out = np.zeros(len(self.ids), dtype=np.float32)
        cols = [self.vocab[t] for t in dict.fromkeys(query_tokens) if t in self.vocab]
        if cols:
            out += self._column(cols)
        for group in synonyms:
            gcols = [self.vocab[t] for t in dict.fromkeys(group) if t in self.vocab]
            if gcols:
                out += np.max([self._column([c]) for c in gcols], axis=0)
        return out * np.float32(self._scale)

    def idf(self, tokens: Iterable[str]) -> dict[str, float]:
        """Inverse document frequency of each known token (0 for tokens the corpus does not have)."""
        n = max(len(self.ids), 1)
        out = {}
        for t in tokens:
            j = self.vocab.get(t)
            out[t] = float(np.log(1.0 + (n - self._df[j] + 0.5) / (self._df[j] + 0.5))) if j is not None else 0.0
        return out


def fingerprint(committed_ids: Iterable[str]) -> str:
    h = hashlib.sha256()
    for i in sorted(committed_ids):
        h.update(i.encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


class KeywordIndex:
    """The BM25 index of one collection, cached under DIR and rebuilt when the visible chunk set changes.

    Tokens are cached per chunk id, so an ingest re-tokenises only the chunks it added.
    """

    def __init__(self, directory: Path, method: Tokenizer = "ngram") -> None:
        self.dir = directory
        self.method: Tokenizer = method
        self.fingerprint: str | None = None
        self.bm25: BM25 | None = None
        self._tokens: dict[str, tuple[list[str], str, int]] | None = None
        self.doc_ids = np.array([], dtype=object)
        self.chapters = np.array([], dtype=np.int32)

    def _tokens_path(self) -> Path:
        return self.dir / f"tokens-{self.method}-{_TOKENS_FORMAT}.pkl"

    def _index_path(self) -> Path:
        return self.dir / f"bm25-{self.method}.pkl"

    def load_tokens(self) -> dict[str, tuple[list[str], str, int]]:
        if self._tokens is None:
            try:
                with open(self._tokens_path(), "rb") as f:
                    self._tokens = pickle.load(f)
            except (OSError, pickle.UnpicklingError, EOFError):
                self._tokens = {}
        return self._tokens

    def try_load(self, fp: str) -> bool:
        """Use the index on disk if it was built for exactly this set of chunks."""
        if self.fingerprint == fp and self.bm25 is not None:
            return True
        try:
            with open(self._index_path(), "rb") as f:
                fmt, saved_fp, bm25, doc_ids, chapters = pickle.load(f)
        except (OSError, pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError):
            return False
        if fmt != _INDEX_FORMAT or saved_fp != fp:  # an index another version wrote is rebuilt
            return False
        self.fingerprint, self.bm25, self.doc_ids, self.chapters = saved_fp, bm25, doc_ids, chapters
        return True

    def build(self, fp: str, ids: Sequence[str], fetch: Callable[[list[str]], Iterable[StoredChunk]]) -> None:
        """(Re)build for the given visible chunk ids; `fetch` supplies chunks not tokenised yet."""
        cache = self.load_tokens()
        missing = [i for i in ids if i not in cache]
        for c in fetch(missing) if missing else ():
            chapter = c.metadata.get("chapter")
            cache[c.chunk_id] = (
                tokenize(c.text, self.method),
                str(c.metadata.get("doc_id", "")),
                -1 if chapter is None else int(chapter),
            )
        live = set(ids)
        for stale in [k for k in cache if k not in live]:
            del cache[stale]
        self.bm25 = BM25(ids, [cache[i][0] for i in ids])
        self.doc_ids = np.array([cache[i][1] for i in ids], dtype=object)
        self.chapters = np.array([cache[i][2] for i in ids], dtype=np.int32)
        self.fingerprint = fp
        try:
            _save(
                self.dir,
                {
                    self._tokens_path(): cache,
                    self._index_path(): (_INDEX_FORMAT, fp, self.bm25, self.doc_ids, self.chapters),
                },
            )
        except OSError as exc:  # a read-only data dir still serves queries from memory
            log.warning("could not save the keyword index under %s: %s", self.dir, exc)

    def mask(
        self, doc_ids: Sequence[str] | None, chapter_min: int | None, chapter_max: int | None
    ) -> np.ndarray | None:
        """Boolean mask over the index rows for a filter, or None when nothing is filtered."""
        if not doc_ids and chapter_min is None and chapter_max is None:
            return None
        m = np.ones(len(self.chapters), dtype=bool)
        if doc_ids:
            m &= np.isin(self.doc_ids, list(doc_ids))
        if chapter_min is not None:
            m &= self.chapters >= chapter_min
        if chapter_max is not None:
            m &= (self.chapters <= chapter_max) & (self.chapters >= 0)
        return m


@contextmanager
def _writer_lock(folder: Path) -> Iterator[None]:
    """Hold the folder's writer lock (an flock on the folder itself, released when a process dies)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _remove_stale_temps(folder: Path) -> None:
    """Temporary copies left by a process killed mid-save. Writers hold the folder's lock while a temporary
    copy exists, so under the lock every one is stale (`.NAME.*.part`; `NAME.tmpPID` of older versions)."""
    for tmp in [*folder.glob(".*.pkl.*.part"), *folder.glob("*.pkl.tmp*")]:
        tmp.unlink(missing_ok=True)


def _save(folder: Path, files: dict[Path, object]) -> None:
    """Pickle each object to its file, atomically (a reader sees the old file or the new one, whole)."""
    folder.mkdir(parents=True, exist_ok=True)
    with _writer_lock(folder):
        _remove_stale_temps(folder)
        for path, obj in files.items():
            with atomic_open(path, "wb") as f:  # a full disk leaves no half-written copy
                pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
