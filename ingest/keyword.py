"""Keyword side of hybrid search: BM25 over a collection's visible chunks, persisted on disk.

Two tokenisers: character unigrams + bigrams of Chinese runs ("ngram", the default: it measured better on
the 三国演义 dev set, whose questions are modern Chinese and whose text is classical), and jieba's
search-mode words ("jieba"). Both read the folded text (normalize.fold: one script, NFKC widths) plus the value
of each Chinese numeral in digits, so 關羽 finds 关羽 and 3000 finds 三千. See BENCHMARKS.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .aliases import AliasTable
from .bm25 import BM25, Segment, merge
from .fsio import atomic_open, flocked, write_text_atomic
from .normalize import fold, measure_variant, number_tokens
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
_INDEX_FORMAT = "segments-2"  # in the manifest: another value (or none) means rebuild
MERGE_FACTOR = 10  # segments of one size tier merged into one (Lucene's TieredMergePolicy default, 10 a tier)
# No merge makes a segment of more live rows (Lucene's maxMergedSegmentMB): a merge holds ~28 bytes a (chunk, term)
# pair, ~0.6 GiB at this size, so a writer's memory stays bounded however large the index grows (ten ingest groups
# of 2 M characters, ~42,000 chunks, still merge into one)
MAX_MERGED_ROWS = 50_000
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


def keyword_query(query: str, aliases: AliasTable | None, method: Tokenizer) -> tuple[list[str], list[list[str]]]:
    """The query's plain BM25 tokens, and one synonym group per entity it names (all its names' tokens). English
    function words (the, of, what…) are left out: in a knowledge base with few English documents they are rare, so
    they would weigh as much as the question's own words and draw any English question to those documents."""
    tokens = tokenize(query, method)
    if any("a" <= c <= "z" for c in query.lower()):  # (scikit-learn's list: loaded by the first English query)
        from .query_translation import stop_words

        tokens = [t for t in tokens if t not in stop_words()]
    groups = [[t, measure_variant(t)] for t in dict.fromkeys(tokens) if measure_variant(t) != t]  # 支箭 or 枝箭
    tokens = [t for t in tokens if measure_variant(t) == t]
    if aliases is None:
        return tokens, groups
    for name in aliases.find(query):
        names = [name, *aliases.expansions(name)]
        groups.append(list(dict.fromkeys(t for n in names for t in tokenize(n, method))))
    in_groups = {t for g in groups for t in g}
    return [t for t in tokens if t not in in_groups], groups


def kin_group(names: list[str], method: Tokenizer) -> list[list[str]]:
    """The names of relatives a query asks after (kin.KinTable.relatives) as one synonym group: a passage counts
    the best of them once."""
    tokens = list(dict.fromkeys(t for n in names for t in tokenize(fold(n), method)))
    return [tokens] if tokens else []


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
    """The BM25 index of one collection, kept under DIR as immutable segments (the term counts of the chunks one
    refresh added) and a small manifest naming the live segments and their deleted rows (Lucene's layout).

    A refresh tokenises and writes only the chunks it adds, marks the removed ones dead in the manifest, and merges
    segments when ten of one size pile up (never into one of more than `max_merged_rows` live rows); it reads the
    other segments' chunk ids, not their term counts. A reader loads only the segments it does not hold yet.
    Writers hold the folder's lock; a segment no manifest names (a writer killed before its manifest) is ignored,
    then deleted. A segment is two files: its rows (chunk ids, their documents, chapters and lengths) and its term
    counts.
    """

    def __init__(self, directory: Path, method: Tokenizer = "ngram", max_merged_rows: int = MAX_MERGED_ROWS) -> None:
        self.dir = directory
        self.method: Tokenizer = method
        self.max_merged_rows = max_merged_rows
        self.fingerprint: str | None = None
        self._segments: list[Segment] | None = None
        self._view: BM25 | None = None  # BM25 over `_segments`, built when first asked for
        self._viewed: list[Segment] | None = None  # the segments `_view` serves
        self._version: str | None = None  # of the manifest the segments in memory match (None: none)
        self._damaged = False  # a segment file could not be read: the next build starts over

    @property
    def bm25(self) -> BM25 | None:
        """The scorer over the live chunks (None before a load or build); reads term counts it lacks."""
        if self._segments is not None and self._viewed is not self._segments:
            segments = self._segments
            if not all(s.loaded for s in segments) and self.dir.is_dir():
                with _folder_lock(self.dir, exclusive=False):  # a merging writer deletes files after its manifest
                    self._load_postings(segments)
            self._view = (self._view or BM25()).with_segments(segments)
            self._viewed = segments
        return self._view

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
        if self.fingerprint == fp and self._segments is not None:
            return True
        m = self._read_manifest()
        if m is None or m.get("fingerprint") != fp:
            return False
        try:
            with _folder_lock(self.dir, exclusive=False):  # a writer merging now deletes segments after it
                if not self._sync() or not self._load_postings(self._segments or []):
                    return False
        except OSError:
            return False
        return self.fingerprint == fp and self.bm25 is not None

    def _sync(self) -> bool:
        """Make the segments in memory those the manifest names (reading the rows of the ones not held yet, not
        their term counts); False when there is no usable manifest. Called under the folder's lock."""
        m = self._read_manifest()
        if m is None:
            return False
        if m["version"] == self._version and self._segments is not None:
            return True
        held = {s.name: s for s in self._segments or () if s.saved}
        segments = []
        try:
            for entry in m["segments"]:
                seg = held.get(entry["name"]) or _open_segment(self.dir, entry["name"])
                dead = np.zeros(len(seg.ids), dtype=bool)
                dead[entry["dead"]] = True
                if not np.array_equal(dead, seg.dead):
                    seg.dead = np.zeros_like(dead)
                    seg.kill(np.flatnonzero(dead))
                segments.append(seg)
        except (OSError, pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError, IndexError) as exc:
            log.warning("keyword index under %s is damaged (%s): rebuilding it", self.dir, exc)
            return False
        self._segments = segments
        self.fingerprint, self._version = m["fingerprint"], m["version"]
        return True

    def _load_postings(self, segments: list[Segment]) -> bool:
        """Read the term counts of the segments that lack them; False (and none held) when one is damaged."""
        try:
            for seg in segments:
                seg.postings()
        except (OSError, pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError) as exc:
            log.warning("keyword index under %s is damaged (%s): rebuilding it", self.dir, exc)
            self._segments, self._version, self._damaged = None, None, True
            return False
        return True

    def build(self, fp: str, ids: Sequence[str], fetch: Callable[[list[str]], Iterable[StoredChunk]]) -> None:
        """Bring the index to the given visible chunk ids: `fetch` supplies the chunks it does not have yet.
        Saves only the new segment (and any merge) and the manifest."""
        serving = self._view is not None  # a reader's index: its scorer follows now, under the lock
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with _folder_lock(self.dir, exclusive=True):
                _remove_stale_temps(self.dir)
                if self._damaged or (not self._sync() and not all(s.loaded for s in self._segments or ())):
                    self._segments, self._version = None, None  # nothing usable on disk nor in memory: start over
                self._damaged = False
                for seg in self._segments or ():
                    seg.saved = seg.saved and self._version is not None
                self._apply(fp, ids, fetch)
                if serving and not self._load_postings(self._segments or []):  # a damaged segment: start over
                    self._damaged = False
                    self._apply(fp, ids, fetch)
                self._save()
        except OSError as exc:  # a read-only data dir still serves queries from memory
            log.warning("could not save the keyword index under %s: %s", self.dir, exc)
            self._version = None  # what is in memory is not what the manifest says
            self._apply(fp, ids, fetch)

    def _apply(self, fp: str, ids: Sequence[str], fetch: Callable[[list[str]], Iterable[StoredChunk]]) -> None:
        """Delete the rows of chunks no longer visible, add a segment of the new ones, merge; in memory."""
        segments = list(self._segments or ())
        where = {
            i: (k, r)
            for k, s in enumerate(segments)
            for r, (i, dead) in enumerate(zip(s.ids, s.dead.tolist(), strict=True))
            if not dead
        }
        want = set(ids)
        gone = [where[i] for i in where if i not in want]
        new = [i for i in ids if i not in where]
        for k in {k for k, _ in gone}:
            segments[k].kill(r for j, r in gone if j == k)
        if new:
            chunks = [c for c in fetch(new) if c.chunk_id not in where]
            chapters = [c.metadata.get("chapter") for c in chunks]
            segments.append(
                Segment.from_tokens(
                    self._segment_name(),
                    [c.chunk_id for c in chunks],
                    (tokenize(c.text, self.method) for c in chunks),  # one chunk's tokens held at a time
                    [str(c.metadata.get("doc_id", "")) for c in chunks],
                    [-1 if ch is None else int(ch) for ch in chapters],
                )
            )
        if gone or new or self._segments is None:
            self._segments = self._merged(segments)
        self.fingerprint = fp

    def _segment_name(self) -> str:
        return f"seg-{self.method}-{secrets.token_hex(6)}"

    def _merged(self, segments: list[Segment]) -> list[Segment]:
        """Drop emptied segments, rewrite those mostly dead, and merge any MERGE_FACTOR segments of one size tier
        (live rows within a power of ten) into one, as Lucene's tiered merge policy does: the smallest of them that
        fit `max_merged_rows` together (a tier none of whose pairs fit is left as it is)."""
        out = [s if 2 * s.live > len(s.ids) else merge(self._segment_name(), [s]) for s in segments if s.live]
        closed: set[int] = set()
        while True:
            tiers: dict[int, list[Segment]] = {}
            for s in out:
                tiers.setdefault(len(str(s.live)), []).append(s)
            tier, full = next(((t, g) for t, g in tiers.items() if len(g) >= MERGE_FACTOR and t not in closed),
                              (0, []))  # fmt: skip
            if not full:
                return out
            chosen, rows = set(), 0
            for s in sorted(full, key=lambda s: s.live):
                if rows + s.live > self.max_merged_rows:
                    break
                chosen.add(id(s))
                rows += s.live
            group = [s for s in full if id(s) in chosen]
            if len(group) < 2:
                closed.add(tier)
                continue
            at = out.index(group[0])
            out = [s for s in out if id(s) not in chosen]
            out.insert(at, merge(self._segment_name(), group))

    def _save(self) -> None:
        """Write the segments not on disk yet (term counts, then rows), then the manifest that names them (a reader
        sees the old manifest or the new one), then delete what no manifest names any more. Under the lock."""
        segments = self._segments or []
        for seg in segments:
            if not seg.saved:
                for suffix, state in ((".terms.pkl", seg.postings_state()), (".rows.pkl", seg.rows_state())):
                    with atomic_open(self.dir / (seg.name + suffix), "wb") as f:  # a full disk leaves no half copy
                        pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
                seg.saved = True
        version = secrets.token_hex(8)
        manifest = {
            "format": _INDEX_FORMAT,
            "method": self.method,
            "fingerprint": self.fingerprint,
            "version": version,
            "segments": [
                {"name": s.name, "rows": len(s.ids), "dead": np.flatnonzero(s.dead).tolist()} for s in segments
            ],
        }
        write_text_atomic(self._manifest_path(), json.dumps(manifest))
        self._version = version
        keep = {s.name for s in segments}
        old = [*self.dir.glob(f"bm25-{self.method}.pkl"), *self.dir.glob(f"tokens-{self.method}*.pkl")]
        for path in [*self.dir.glob(f"seg-{self.method}-*.pkl"), *old]:
            if path.name.split(".")[0] not in keep:
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


def _open_segment(folder: Path, name: str) -> Segment:
    """A saved segment: its rows read now, its term counts when first needed."""

    def load() -> dict[str, Any]:
        with open(folder / f"{name}.terms.pkl", "rb") as f:
            return pickle.load(f)

    with open(folder / f"{name}.rows.pkl", "rb") as f:
        seg = Segment(name, **pickle.load(f), load=load)
    seg.saved = True
    return seg


def _folder_lock(folder: Path, exclusive: bool) -> AbstractContextManager[None]:
    """Hold the folder's lock (an flock on the folder itself, released when a process dies): writers exclusive,
    readers of segment files shared (a writer deletes the segments a merge replaced)."""
    return flocked(folder, exclusive)


def _remove_stale_temps(folder: Path) -> None:
    """Temporary copies left by a process killed mid-save. Writers hold the folder's lock while a temporary
    copy exists, so under the lock every one is stale (`.NAME.*.part`; `NAME.tmpPID` of older versions)."""
    for tmp in [*folder.glob(".*.part"), *folder.glob("*.pkl.tmp*")]:
        tmp.unlink(missing_ok=True)
