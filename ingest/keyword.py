"""Keyword side of hybrid search: BM25 over a collection's visible chunks, persisted on disk.

Two tokenisers: character unigrams + bigrams of Chinese runs ("ngram", the default: it measured better on
the 三国演义 dev set, whose questions are modern Chinese and whose text is classical), and jieba's
search-mode words ("jieba"). Both read the folded text (normalize.fold: one script, NFKC widths) plus the value
of each Chinese numeral in digits, so 關羽 finds 关羽 and 3000 finds 三千. See BENCHMARKS.md.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import pickle
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .bm25 import BM25, Segment, merge
from .fsio import atomic_open, write_text_atomic
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
_INDEX_FORMAT = "segments-1"  # in the manifest: another value (or none) means rebuild
MERGE_FACTOR = 10  # segments of one size tier merged into one (Lucene's TieredMergePolicy default, 10 a tier)
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


def fingerprint(committed_ids: Iterable[str]) -> str:
    h = hashlib.sha256()
    for i in sorted(committed_ids):
        h.update(i.encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


class KeywordIndex:
    """The BM25 index of one collection, kept under DIR as immutable segment files (the term counts of the chunks
    one refresh added) and a small manifest naming the live segments and their deleted rows (Lucene's layout).

    A refresh tokenises and writes only the chunks it adds, marks the removed ones dead in the manifest, and merges
    segments when ten of one size pile up; a reader loads only the segments it does not hold yet. Writers hold
    the folder's lock; a segment no manifest names (a writer killed before its manifest) is ignored, then deleted.
    """

    def __init__(self, directory: Path, method: Tokenizer = "ngram") -> None:
        self.dir = directory
        self.method: Tokenizer = method
        self.fingerprint: str | None = None
        self.bm25: BM25 | None = None
        self._version: str | None = None  # of the manifest the segments in memory match (None: none)

    @property
    def doc_ids(self) -> np.ndarray:
        return self.bm25.doc_ids if self.bm25 is not None else np.array([], dtype=object)

    @property
    def chapters(self) -> np.ndarray:
        return self.bm25.chapters if self.bm25 is not None else np.array([], dtype=np.int32)

    def _manifest_path(self) -> Path:
        return self.dir / f"manifest-{self.method}.json"

    def _read_manifest(self) -> dict[str, Any] | None:
        try:
            m = json.loads(self._manifest_path().read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        ok = isinstance(m, dict) and m.get("format") == _INDEX_FORMAT and m.get("method") == self.method
        return m if ok else None  # an index another version wrote is rebuilt

    def try_load(self, fp: str) -> bool:
        """Use the index on disk if it was built for exactly this set of chunks."""
        if self.fingerprint == fp and self.bm25 is not None:
            return True
        m = self._read_manifest()
        if m is None or m.get("fingerprint") != fp:
            return False
        try:
            with _folder_lock(self.dir, exclusive=False):  # a writer merging now deletes segments after it
                self._sync()
        except OSError:
            return False
        return self.fingerprint == fp

    def _sync(self) -> bool:
        """Make the segments in memory those the manifest names (loading only the ones not held yet); False when
        there is no usable manifest. Called under the folder's lock."""
        m = self._read_manifest()
        if m is None:
            return False
        if m["version"] == self._version and self.bm25 is not None:
            return True
        held = {s.name: s for s in self.bm25.segments if s.saved} if self.bm25 is not None else {}
        segments = []
        try:
            for entry in m["segments"]:
                seg = held.get(entry["name"]) or _load_segment(self.dir / entry["name"])
                dead = np.zeros(len(seg.ids), dtype=bool)
                dead[entry["dead"]] = True
                if not np.array_equal(dead, seg.dead):
                    seg.dead = np.zeros_like(dead)
                    seg.kill(np.flatnonzero(dead))
                segments.append(seg)
        except (OSError, pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError, IndexError) as exc:
            log.warning("keyword index under %s is damaged (%s): rebuilding it", self.dir, exc)
            return False
        self.bm25 = (self.bm25 or BM25()).with_segments(segments)
        self.fingerprint, self._version = m["fingerprint"], m["version"]
        return True

    def build(self, fp: str, ids: Sequence[str], fetch: Callable[[list[str]], Iterable[StoredChunk]]) -> None:
        """Bring the index to the given visible chunk ids: `fetch` supplies the chunks it does not have yet.
        Saves only the new segment (and any merge) and the manifest."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with _folder_lock(self.dir, exclusive=True):
                _remove_stale_temps(self.dir)
                if not self._sync() and self.bm25 is not None:  # nothing usable on disk: save all we hold
                    for seg in self.bm25.segments:
                        seg.saved = False
                self._apply(fp, ids, fetch)
                self._save()
        except OSError as exc:  # a read-only data dir still serves queries from memory
            log.warning("could not save the keyword index under %s: %s", self.dir, exc)
            self._version = None  # what is in memory is not what the manifest says
            self._apply(fp, ids, fetch)

    def _apply(self, fp: str, ids: Sequence[str], fetch: Callable[[list[str]], Iterable[StoredChunk]]) -> None:
        """Delete the rows of chunks no longer visible, add a segment of the new ones, merge; in memory."""
        bm25 = self.bm25 or BM25()
        where = bm25.where()
        want = set(ids)
        gone = [where[i] for i in where if i not in want]
        new = [i for i in ids if i not in where]
        segments = list(bm25.segments)
        for k in {k for k, _ in gone}:
            segments[k].kill(r for j, r in gone if j == k)
        if new:
            chunks = [c for c in fetch(new) if c.chunk_id not in where]
            chapters = [c.metadata.get("chapter") for c in chunks]
            segments.append(
                Segment.from_tokens(
                    self._segment_name(),
                    [c.chunk_id for c in chunks],
                    [tokenize(c.text, self.method) for c in chunks],
                    [str(c.metadata.get("doc_id", "")) for c in chunks],
                    [-1 if ch is None else int(ch) for ch in chapters],
                )
            )
        if gone or new or self.bm25 is None:
            bm25 = bm25.with_segments(self._merged(segments))
        self.bm25, self.fingerprint = bm25, fp

    def _segment_name(self) -> str:
        return f"seg-{self.method}-{secrets.token_hex(6)}.pkl"

    def _merged(self, segments: list[Segment]) -> list[Segment]:
        """Drop emptied segments, rewrite those mostly dead, and merge any MERGE_FACTOR segments of one size tier
        (live rows within a power of ten) into one, as Lucene's tiered merge policy does."""
        out = [s if 2 * s.live > len(s.ids) else merge(self._segment_name(), [s]) for s in segments if s.live]
        while True:
            tiers: dict[int, list[Segment]] = {}
            for s in out:
                tiers.setdefault(len(str(s.live)), []).append(s)
            full = next((g for g in tiers.values() if len(g) >= MERGE_FACTOR), None)
            if full is None:
                return out
            merged = merge(self._segment_name(), full)
            at = out.index(full[0])
            out = [s for s in out if s not in full]
            out.insert(at, merged)

    def _save(self) -> None:
        """Write the segments not on disk yet, then the manifest that names them (a reader sees the old manifest
        or the new one), then delete what no manifest names any more. Called under the folder's lock."""
        assert self.bm25 is not None
        for seg in self.bm25.segments:
            if not seg.saved:
                with atomic_open(self.dir / seg.name, "wb") as f:  # a full disk leaves no half-written copy
                    pickle.dump(seg.state(), f, protocol=pickle.HIGHEST_PROTOCOL)
                seg.saved = True
        version = secrets.token_hex(8)
        manifest = {
            "format": _INDEX_FORMAT,
            "method": self.method,
            "fingerprint": self.fingerprint,
            "version": version,
            "segments": [
                {"name": s.name, "rows": len(s.ids), "dead": np.flatnonzero(s.dead).tolist()}
                for s in self.bm25.segments
            ],
        }
        write_text_atomic(self._manifest_path(), json.dumps(manifest))
        self._version = version
        keep = {s.name for s in self.bm25.segments}
        old = [*self.dir.glob(f"bm25-{self.method}.pkl"), *self.dir.glob(f"tokens-{self.method}*.pkl")]
        for path in [*self.dir.glob(f"seg-{self.method}-*.pkl"), *old]:
            if path.name not in keep:
                path.unlink(missing_ok=True)

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


def _load_segment(path: Path) -> Segment:
    with open(path, "rb") as f:
        state = pickle.load(f)
    seg = Segment(path.name, **state)
    seg.saved = True
    return seg


@contextmanager
def _folder_lock(folder: Path, exclusive: bool) -> Iterator[None]:
    """Hold the folder's lock (an flock on the folder itself, released when a process dies): writers exclusive,
    readers of segment files shared (a writer deletes the segments a merge replaced)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def _remove_stale_temps(folder: Path) -> None:
    """Temporary copies left by a process killed mid-save. Writers hold the folder's lock while a temporary
    copy exists, so under the lock every one is stale (`.NAME.*.part`; `NAME.tmpPID` of older versions)."""
    for tmp in [*folder.glob(".*.part"), *folder.glob("*.pkl.tmp*")]:
        tmp.unlink(missing_ok=True)
