"""Child vectors: a chunk is embedded as pieces, found by its best piece, and answered with whole."""

from __future__ import annotations

import numpy as np

from ingest import pipeline
from ingest.chunking import embedding_text, pieces
from ingest.kb import open_store
from ingest.retrieval import Filters, Retriever

# one chunk of four sentences about unrelated things: its mean vector is near none of them
LONG = (
    "第一回 杂记\n"
    "孔明向鲁肃借船二十只，每船用军士三十人，船上皆用青布为幔，束草千余个。"
    "张飞在长坂桥上睁圆环眼，厉声大喝，曹军闻之尽皆股栗，夏侯杰惊得肝胆碎裂。"
    "华佗为关公刮骨疗毒，公饮酒食肉，谈笑弈棋，全无痛苦之色。"
    "董卓在郿坞积谷为二十年储，选民间少年美女八百人实其中，金玉彩帛珍珠堆积不知其数。\n"
)


def _settings(settings, **kw):
    return settings.model_copy(update={"chunk_size": 400, "chunk_overlap": 0, "embed_piece_chars": 40, **kw})


def _write(tmp_path, name, text):
    p = tmp_path / "docs" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p


def _expected_pieces(store) -> int:
    """Pieces a store should hold: those of each distinct chunk text."""
    texts = {c.metadata["content_hash"]: embedding_text(c.text, c.metadata, False) for c in store.get_chunks()}
    return sum(len(pieces(t, 40)) for t in texts.values())


def test_a_chunk_is_ranked_by_its_best_piece_and_answered_whole(settings, tmp_path, embedder):
    s = _settings(settings)
    pipeline.add_paths([_write(tmp_path, "long.txt", LONG)], s, embedder=embedder)
    store = open_store(s)
    (chunk,) = list(store.get_chunks())
    parts = pieces(embedding_text(chunk.text, chunk.metadata, False), 40)
    assert len(parts) >= 4 and store.pieces.count() == len(parts)
    assert store.piece_chars(0) == 40  # recorded at the first embedding

    q = embedder.embed_queries(["华佗给关公刮骨的时候关公在做什么"])[0]
    (hit,) = store.query(q, 5)
    assert hit.chunk_id == chunk.chunk_id and hit.text == chunk.text  # the whole chunk, not the piece
    piece_vecs = embedder.embed_passages(parts)
    best = float(np.max(piece_vecs @ q))
    assert abs(hit.score - best) < 1e-3  # its best piece's similarity ...
    mean = piece_vecs.mean(axis=0)
    assert best > float(mean @ q) / float(np.linalg.norm(mean))  # ... above the pooled vector's
    # a filtered search reads the chunk's own (pooled) vector
    (filtered,) = store.query(q, 5, Filters(doc_ids=[str(chunk.metadata["doc_id"])]).chroma())
    assert filtered.chunk_id == chunk.chunk_id and filtered.score < hit.score

    retriever = Retriever(s, embedder=embedder, refresh_seconds=0)
    (top,) = retriever.retrieve("华佗给关公刮骨的时候关公在做什么", k=1, mode="dense")
    assert "饮酒食肉" in top.text


def test_a_chunk_can_be_scored_by_the_mean_of_its_best_pieces(settings, tmp_path, embedder):
    """dense_piece_top=2 (the default): a chunk's dense score is the mean similarity of its two best pieces; a chunk
    of one piece scores that piece; 1 is max-sim."""
    s = _settings(settings)
    short = "第二回 短记\n赵云怀抱阿斗，杀透重围。\n"
    pipeline.add_paths([_write(tmp_path, "long.txt", LONG), _write(tmp_path, "short.txt", short)], s, embedder=embedder)
    store = open_store(s)
    by_text = {c.text: c for c in store.get_chunks()}
    q = embedder.embed_queries(["华佗给关公刮骨的时候关公在做什么"])[0]
    exact = {}
    for c in by_text.values():
        sims = sorted(embedder.embed_passages(pieces(embedding_text(c.text, c.metadata, False), 40)) @ q)[::-1]
        for top in (1, 2):
            (hit,) = [h for h in store.query(q, 5, piece_top=top) if h.chunk_id == c.chunk_id]
            assert abs(hit.score - float(np.mean(sims[:top]))) < 1e-3, (c.text[:10], top)
            exact[c.chunk_id, top] = float(np.mean(sims[:top]))
    # asked for one chunk, the search reads only the 4 nearest pieces of the 7 or more held: the second pieces it
    # did not read are read from the store for the texts that could still win
    assert store.pieces.count() > 4
    for top in (1, 2):
        (first,) = store.query(q, 1, piece_top=top)
        assert abs(first.score - max(v for (_, t), v in exact.items() if t == top)) < 1e-3
    assert s.dense_piece_top == 2
    retriever = Retriever(s, embedder=embedder, refresh_seconds=0)
    assert "刮骨" in retriever.retrieve("华佗刮骨疗毒", k=1, mode="dense")[0].text
    # piece agreement (off by default): the piece holding the query's words is the piece nearest it, so the hybrid
    # search says so
    on = Retriever(s.model_copy(update={"piece_agreement_weight": 0.5}), embedder=embedder, refresh_seconds=0)
    (top,) = on.retrieve("华佗为关公刮骨疗毒", k=1)
    assert "刮骨" in top.text and top.scores["agreement"] > 0.5
    assert "agreement" not in retriever.retrieve("华佗为关公刮骨疗毒", k=1)[0].scores


def test_a_text_in_two_documents_keeps_one_set_of_pieces_until_both_are_gone(settings, tmp_path, embedder):
    s = _settings(settings)
    a = _write(tmp_path, "a.txt", LONG)
    b = _write(tmp_path, "b.txt", LONG + "第二回 又记\n赵云怀抱阿斗，杀透重围，血满征袍。\n")
    pipeline.add_paths([a, b], s, embedder=embedder)
    store = open_store(s)
    held = _expected_pieces(store)
    assert store.count() == 3 and store.pieces.count() == held  # the shared text's pieces once
    pipeline.remove_documents([str(a)], s)
    assert store.count() == 2 and store.pieces.count() == held  # b still holds the shared text
    q = embedder.embed_queries(["赵云怀抱阿斗杀出重围"])[0]
    assert "阿斗" in store.query(q, 1)[0].text
    pipeline.remove_documents([str(b)], s)
    assert store.pieces.count() == 0 and store.count() == 0


def test_a_store_keeps_the_piece_length_it_was_embedded_with_until_rebuilt(settings, tmp_path, embedder):
    whole = _settings(settings, embed_piece_chars=0)
    pipeline.add_paths([_write(tmp_path, "long.txt", LONG)], whole, embedder=embedder)
    later = _settings(settings)  # the setting changed: the knowledge base keeps whole-chunk vectors
    pipeline.add_paths([_write(tmp_path, "more.txt", "第二回 又记\n赵云怀抱阿斗，杀透重围，血满征袍。\n")], later,
                       embedder=embedder)
    store = open_store(later)
    assert store.piece_chars(40) == 0 and store.pieces.count() == 0 and store.count() == 2
    q = embedder.embed_queries(["赵云怀抱阿斗杀出重围"])[0]
    assert "阿斗" in store.query(q, 1)[0].text

    pipeline.rebuild(later)  # re-embeds in pieces of the configured length
    store = open_store(later)
    assert store.piece_chars(0) == 40 and store.pieces.count() == _expected_pieces(store) > 2
    top = store.query(embedder.embed_queries(["华佗给关公刮骨的时候关公在做什么"])[0], 1)[0]
    assert "饮酒食肉" in top.text
    names = {getattr(c, "name", c) for c in store.client.list_collections()}
    assert not any(n.endswith("__rebuild") for n in names)


def test_a_reader_follows_a_rebuild_made_beside_it(settings, tmp_path, embedder):
    """`ingest rebuild` swaps new collections in; a retriever opened before (the service) searches them, not a
    collection that no longer exists."""
    s = _settings(settings, embed_piece_chars=0)
    pipeline.add_paths([_write(tmp_path, "long.txt", LONG)], s, embedder=embedder)
    retriever = Retriever(s, embedder=embedder, refresh_seconds=0)
    question = "华佗给关公刮骨的时候关公在做什么"
    assert "饮酒食肉" in retriever.retrieve(question, k=1, mode="dense")[0].text
    pipeline.rebuild(_settings(settings), embedder=embedder)  # into pieces of 40
    (top,) = retriever.retrieve(question, k=1, mode="dense")
    assert "饮酒食肉" in top.text and retriever.store.piece_chars(0) == 40
    assert retriever.store.pieces.count() == _expected_pieces(retriever.store)


def test_piece_vectors_are_read_by_id_however_many_pieces_a_text_has(tmp_path):
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    from ingest.pieces import _PROBE, PieceVectors

    client = chromadb.PersistentClient(path=str(tmp_path / "c"), settings=ChromaSettings(anonymized_telemetry=False))
    store = PieceVectors(client, "kb_t")
    rng = np.random.default_rng(0)
    few, many = rng.normal(size=(3, 8)), rng.normal(size=(_PROBE + 4, 8))  # the second: more pieces than one read
    store.add({"a" * 16: few.tolist(), "b" * 16: many.tolist()})
    q = rng.normal(size=8)
    sims = store.similarities(q.tolist(), ["a" * 16, "b" * 16, "c" * 16])
    unit = q / np.linalg.norm(q)
    for h, vecs in (("a" * 16, few), ("b" * 16, many)):  # every piece, in piece order
        expect = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)) @ unit
        assert np.allclose(sims[h], expect, atol=1e-5)
    assert "c" * 16 not in sims  # a text without pieces
