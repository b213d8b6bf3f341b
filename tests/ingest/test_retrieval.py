"""Hybrid retrieval over a real store: fusion, filters, aliases, and the library call."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest import pipeline
from ingest.errors import UnknownDocumentError
from ingest.loaders import doc_id_for
from ingest.retrieval import Filters, Retriever, retrieve
from ingest.settings import get_settings

ROOT = Path(__file__).resolve().parents[2]

CHAPTERS = {
    1: "覆姓诸葛，名亮，字孔明，琅琊阳都人也。诸葛亮躬耕于南阳，好为梁父吟。诸葛亮每自比于管仲、乐毅。",
    2: "孔明筑七星坛于南屏山，披发仗剑，登坛作法。是夜三更，忽然东风大起，吹得旗幡尽向西北。",
    3: "周瑜欲害孔明，令丁奉、徐盛引兵追之。孔明早令赵云驾小舟接应，扬帆而去。",
    4: "诸葛亮之兄在东吴为官，兄弟各事其主，公私分明，常往来于两国之间。",
    5: "曹操大宴铜雀台，令武将比试弓箭，徐晃一箭射中锦袍，众皆喝彩。",
}


@pytest.fixture(scope="module")
def kb(tmp_path_factory, embedder):
    root = tmp_path_factory.mktemp("kb")
    novel = root / "novel.txt"
    novel.write_text("".join(f"第{n}回 回目{n}\n{t}\n" for n, t in CHAPTERS.items()), encoding="utf-8")
    notes = root / "notes.md"
    notes.write_text("# 札记\n\n赤壁一战，曹军大败，火攻乃成。\n", encoding="utf-8")
    aliases = root / "aliases.txt"
    aliases.write_text("诸葛亮 孔明 卧龙\n", encoding="utf-8")
    settings = get_settings(data_dir=root / "data", collection="sg", chunk_size=120, chunk_overlap=0)
    pipeline.add_paths([novel, notes], settings, embedder=embedder)
    return settings, aliases


def chapter_of(hits):
    return [h.chapter for h in hits]


def test_hybrid_fuses_dense_and_keyword_ranks(kb, embedder):
    settings, _ = kb
    r = Retriever(settings, embedder=embedder)
    hits = r.retrieve("谁在南屏山登坛作法祭东风", k=3)
    assert hits[0].chapter == 2
    top = hits[0].scores
    assert {"dense", "keyword", "dense_rank", "keyword_rank", "fused"} <= set(top)
    w = settings.keyword_weight
    agree = settings.piece_agreement_weight * top.get("agreement", 0.0) / 61  # piece agreement, in rank-1 votes
    assert top["fused"] == pytest.approx(1 / (60 + top["dense_rank"]) + w / (60 + top["keyword_rank"]) + agree)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    dense = r.retrieve("谁在南屏山登坛作法祭东风", k=3, mode="dense")
    keyword = r.retrieve("谁在南屏山登坛作法祭东风", k=3, mode="keyword")
    assert dense[0].chapter == 2 and keyword[0].chapter == 2
    assert all("keyword" not in h.scores for h in dense) and all("dense" not in h.scores for h in keyword)


def test_chapter_and_document_filters(kb, embedder):
    settings, _ = kb
    r = Retriever(settings, embedder=embedder)
    for mode in ("hybrid", "dense", "keyword"):
        hits = r.retrieve("孔明", k=10, filters=Filters(chapter_min=2, chapter_max=3), mode=mode)
        assert hits and set(chapter_of(hits)) <= {2, 3}, mode
    notes_id = next(d for d, rec in r.documents.items() if rec.title == "札记")
    hits = r.retrieve("东风", k=10, filters=Filters(doc_ids=[notes_id]))
    assert "火攻" in hits[0].text
    assert hits and {h.metadata["doc_id"] for h in hits} == {notes_id}
    assert all(h.chapter is None for h in hits)


def test_mined_aliases_bring_a_name_to_passages_using_another(kb, embedder):
    settings, _ = kb
    # the chunks' own BM25 only: in five one-chunk chapters a neighbour's or a title's words would decide the order
    settings = settings.model_copy(update={"keyword_neighbour_weight": 0.0, "keyword_title_weight": 0.0})
    with_aliases = Retriever(settings, embedder=embedder)
    without = Retriever(settings, embedder=embedder, use_aliases=False)
    assert "孔明" in with_aliases.expand("诸葛亮借东风")
    query = "诸葛亮东风"
    ranked = chapter_of(with_aliases.retrieve(query, k=5, mode="keyword"))
    plain = chapter_of(without.retrieve(query, k=5, mode="keyword"))
    # chapter 2 tells the story but calls him 孔明; chapter 4 names 诸葛亮 but is about his brother
    assert ranked.index(2) < ranked.index(4)
    assert plain.index(4) < plain.index(2)


def test_user_alias_table_adds_names_the_corpus_never_defines(kb, embedder):
    settings, aliases = kb
    plain = Retriever(settings, embedder=embedder)
    assert "卧龙" not in plain.aliases.names
    table = Retriever(settings.model_copy(update={"aliases_file": aliases}), embedder=embedder)
    assert {"孔明", "诸葛亮"} <= set(table.expand("卧龙在哪里筑坛"))
    boosted = table.retrieve("卧龙登坛作法", k=1, mode="keyword")[0]
    assert boosted.chapter == 2
    assert boosted.score > plain.retrieve("卧龙登坛作法", k=1, mode="keyword")[0].score


def test_retriever_sees_documents_added_after_it_started(kb, embedder, tmp_path):
    settings, _ = kb
    r = Retriever(settings, embedder=embedder, refresh_seconds=0)
    extra = tmp_path / "extra.txt"
    extra.write_text("张飞据水断桥，大喝一声，曹军退走。\n", encoding="utf-8")
    pipeline.add_paths([extra], settings, embedder=embedder)
    try:
        assert "断桥" in r.retrieve("长坂坡断桥", k=1)[0].text
    finally:
        pipeline.remove_documents([str(extra)], settings)
    assert all("断桥" not in h.text for h in r.retrieve("长坂坡断桥", k=5))


def test_library_retrieve_call(kb):
    settings, _ = kb
    hits = retrieve("徐晃射中锦袍", k=2, settings=settings)
    assert len(hits) == 2 and hits[0].chapter == 5
    assert hits[0].metadata["chapter_title"] == "回目5" and hits[0].text.startswith("曹操大宴铜雀台")


def ingest_cli(settings, *args: str) -> subprocess.CompletedProcess[str]:
    """The `ingest` command in its own process, on the same embedded store as `settings`."""
    env = {
        **os.environ,
        "KONGMING_DATA_DIR": str(settings.data_dir),
        "KONGMING_COLLECTION": settings.collection,
        "KONGMING_CHUNK_SIZE": str(settings.chunk_size),
        "KONGMING_CHUNK_OVERLAP": str(settings.chunk_overlap),
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.run(
        [sys.executable, "-m", "ingest.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_a_running_retriever_sees_an_ingest_by_another_process_within_seconds(kb, embedder, tmp_path):
    """`ingest add` beside a running service, on one embedded store: the reader follows without a restart,
    and a search restricted to the new document works at once (it was chromadb's "Error finding id")."""
    settings, _ = kb
    r = Retriever(settings, embedder=embedder)  # the service's default: checks the store every 2 s
    assert "断桥" not in r.retrieve("长坂坡断桥", k=1)[0].text  # this process has read the vector index
    extra = tmp_path / "changban.txt"
    extra.write_text("张飞据水断桥，大喝一声，曹军退走。\n", encoding="utf-8")
    done = ingest_cli(settings, "add", str(extra), "--no-progress")
    assert done.returncode == 0, done.stderr
    new_id = doc_id_for(extra)
    try:
        (hit,) = r.retrieve("长坂坡断桥", k=1, filters=Filters(doc_ids=[new_id]))
        assert "断桥" in hit.text and hit.metadata["doc_id"] == new_id
        time.sleep(r.refresh_seconds + 0.1)  # "within a few seconds"
        assert "断桥" in r.retrieve("长坂坡断桥", k=1)[0].text
        assert new_id in r.documents
    finally:
        done = ingest_cli(settings, "remove", str(extra))
    assert done.returncode == 0, done.stderr
    with pytest.raises(UnknownDocumentError, match=new_id):  # stale: removed by the other process
        r.retrieve("长坂坡断桥", k=1, filters=Filters(doc_ids=[new_id]))
    assert all("断桥" not in h.text for h in r.retrieve("长坂坡断桥", k=5))


@pytest.mark.parametrize("mode", ["hybrid", "dense", "keyword"])
def test_a_search_restricted_to_an_unknown_document_names_it(kb, embedder, mode):
    settings, _ = kb
    r = Retriever(settings, embedder=embedder)
    known = next(iter(r.documents))
    with pytest.raises(UnknownDocumentError, match="'no-such-doc'") as err:
        r.retrieve("孔明", k=3, filters=Filters(doc_ids=[known, "no-such-doc"]), mode=mode)
    assert known not in str(err.value) and "ingest list" in str(err.value)
    assert r.retrieve("孔明", k=3, filters=Filters(doc_ids=[known]), mode=mode)


def test_a_keyword_index_saved_by_another_version_is_rebuilt_not_used(tmp_path):
    import json
    import pickle

    from ingest.keyword import BM25, KeywordIndex
    from ingest.store import StoredChunk

    chunks = {"a": "诸葛亮草船借箭", "b": "曹操败走华容道"}

    def fetch(ids):
        return [StoredChunk(i, chunks[i], {"doc_id": "d"}) for i in ids]

    # what versions before the segmented index left: a whole pickled index and a token cache
    (tmp_path / "bm25-ngram.pkl").write_bytes(pickle.dumps(("bm25s-2", "fp1", object(), [], [])))
    (tmp_path / "tokens-ngram-fold1.pkl").write_bytes(pickle.dumps({}))
    assert not KeywordIndex(tmp_path).try_load("fp1")
    KeywordIndex(tmp_path).build("fp1", ["a", "b"], fetch)
    manifest = tmp_path / "manifest-ngram.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "format": "segments-0"}))
    assert not KeywordIndex(tmp_path).try_load("fp1")  # a manifest of another format is not read
    KeywordIndex(tmp_path).build("fp1", ["a", "b"], fetch)
    again = KeywordIndex(tmp_path)
    assert again.try_load("fp1") and isinstance(again.bm25, BM25)
    assert sorted(again.bm25.ids) == ["a", "b"] and again.bm25.ids[again.bm25.scores(["华容"]).argmax()] == "b"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[0] == "manifest-ngram.json" and len(names) == 3 and all(n.startswith("seg-ngram-") for n in names[1:])


def test_copies_of_a_document_do_not_crowd_the_top_k(tmp_path, embedder, novel_text):
    """Three copies of one document: each side's pool (20) held each text three times, so a dense or keyword
    search for k=8 returned 7 distinct passages although the document has 21."""
    root = tmp_path / "docs"
    root.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (root / name).write_text(novel_text, encoding="utf-8")
    for pieces in (40, 0):
        settings = get_settings(
            data_dir=tmp_path / f"data{pieces}", collection="dup", chunk_size=40, chunk_overlap=0,
            embed_piece_chars=pieces,
        )
        pipeline.add_paths([root], settings, embedder=embedder)
        r = Retriever(settings, embedder=embedder)
        distinct = len({c.text for c in r.store.get_chunks()})
        assert distinct > 10
        # the keyword side too: its pool of 20 held 7 texts three times over
        for k, mode in ((8, "dense"), (10, "dense"), (8, "hybrid"), (10, "hybrid"), (8, "keyword")):
            hits = r.retrieve("周瑜欲害孔明", k=k, mode=mode)
            assert len(hits) == k and len({h.text for h in hits}) == k, (pieces, k, mode, len(hits))
        assert len(r.retrieve("周瑜欲害孔明", k=distinct + 5, mode="dense")) == distinct
        # a search restricted to one copy still finds that copy's passages, on either side
        (copy,) = [d for d, rec in r.documents.items() if rec.source.endswith("c.txt")]
        for mode in ("keyword", "dense", "hybrid"):
            hits = r.retrieve("周瑜欲害孔明", k=5, mode=mode, filters=Filters(doc_ids=[copy]))
            assert len(hits) == 5 and {h.metadata["doc_id"] for h in hits} == {copy}, mode


def test_a_copy_kept_beside_its_original_is_not_returned_twice(tmp_path, embedder):
    """Two documents with the same text (a copy whose original still exists is kept and reported at ingest):
    the top-k holds each passage once, and is still k long when more distinct passages exist."""
    root = tmp_path / "docs"
    root.mkdir()
    text = "".join(f"第{n}回 回目{n}\n{t}\n" for n, t in CHAPTERS.items())
    for name in ("chibi.txt", "chibi_copy.txt"):
        (root / name).write_text(text, encoding="utf-8")
    settings = get_settings(data_dir=tmp_path / "data", collection="dup", chunk_size=120, chunk_overlap=0)
    pipeline.add_paths([root], settings, embedder=embedder)
    r = Retriever(settings, embedder=embedder)
    for query, mode in (("孔明筑七星坛于南屏山", "hybrid"), ("周瑜欲害孔明", "dense")):
        hits = r.retrieve(query, k=4, mode=mode)
        assert len(hits) == 4, (query, mode)
        assert len({h.text for h in hits}) == 4, [h.text[:12] for h in hits]
    hits = r.retrieve("曹操大宴铜雀台", k=4, mode="keyword")  # one passage says it, in both copies
    assert hits[0].chapter == 5 and "铜雀台" in hits[0].text
    assert len({h.text for h in hits}) == len(hits) and [h.chapter for h in hits].count(5) == 1


def tiny_novel(tmp_path, embedder, collection: str, chunk_size: int, chapters: list[str]):
    """Settings of a collection holding a novel of `chapters` ("title\ntext" each), ingested."""
    novel = tmp_path / "novel.txt"
    novel.write_text("".join(f"第{n}回 {c}\n" for n, c in enumerate(chapters, start=1)), encoding="utf-8")
    settings = get_settings(data_dir=tmp_path / "data", collection=collection, chunk_size=chunk_size, chunk_overlap=0)
    pipeline.add_paths([novel], settings, embedder=embedder)
    return settings


def test_a_question_about_a_death_also_searches_the_novels_words_for_one(tmp_path, embedder):
    from ingest.events import event_words

    assert event_words("关羽是怎么死的？") and event_words("孙策死时多大？") and event_words("How did Guan Yu die?")
    assert event_words("关羽用什么兵器？") == []
    on = tiny_novel(tmp_path, embedder, "ev", 80, [
        "关公温酒斩华雄\n关羽出马，斩华雄于阵前。关羽提刀上马，众诸侯皆惊。关羽之名，自此天下皆知。",
        "关公父子归神\n孙权命推出关羽。于是关公父子皆遇害。时建安二十四年冬十二月也。",
        "关公挂印封金\n关羽曰：“吾宁死不降，死而后已。”遂挂印封金，辞曹操而去，千里寻兄。",
        "张飞大闹长坂桥\n张飞曰：“死则死耳！”众军皆死战，曹兵死者甚众。",
        "赵云单骑救主\n赵云杀透重围，敌兵死伤无数，救出阿斗。",
    ])
    off = on.model_copy(update={"event_words": False})
    ask = "关羽是怎么死的？"  # the novel: 遇害; 死 is everywhere, and 关羽's own chunk says it of something else
    ranks = [chapter_of(Retriever(s, embedder=embedder).retrieve(ask, k=5, mode="keyword")).index(2) for s in (on, off)]
    assert ranks[0] < ranks[1]  # the chunk that tells the death comes up (2nd of 5, from 3rd)


def test_a_question_about_someones_kin_also_searches_for_the_relative_the_text_names(tmp_path, embedder):
    on = tiny_novel(tmp_path, embedder, "kin", 60, [
        "曹操起兵\n沛国谯郡人也，姓曹名操，字孟德。操父曹嵩，本姓夏侯氏。时人皆敬曹嵩，乡里称曹嵩为长者。曹操少机警。",
        "曹操献刀\n曹操献刀于董卓，乘马而出。曹操逃至中牟县，为守关军士所获。曹操遂与陈宫同行。",
        "张闿杀曹嵩\n陶谦差都尉张闿护送。张闿杀尽曹嵩全家，取了财物，逃奔淮南去了。",
        "曹操兴兵\n曹操闻之，哭倒于地。曹操大怒，起兵报仇，父仇不共戴天。",
        "曹操破吕布\n曹操大破吕布于濮阳，曹操引军还兖州。",
    ])
    retriever = Retriever(on, embedder=embedder)
    assert ["曹操", "父", "曹嵩"] in next(iter(retriever.documents.values())).kin  # mined with the names
    assert retriever.kin_names("曹操的父亲是被谁害死的？") == ["曹嵩"]
    off = Retriever(on.model_copy(update={"kin_relations": False}), embedder=embedder)
    ask = "曹操的父亲是被谁害死的？"  # chapter 3 never names 曹操 nor says 父亲
    ranks = [chapter_of(r.retrieve(ask, k=5, mode="keyword")).index(3) for r in (retriever, off)]
    assert ranks[0] < ranks[1]  # the chunk that tells his father's death comes up (3rd of 5, from 5th)
    assert any("曹嵩" in t for group, _ in retriever.query_terms(ask) for t in group)  # the answer's terms too


def test_a_question_about_the_age_at_a_death_also_searches_how_the_novel_tells_one():
    from ingest.events import event_words

    groups = event_words("孙策死时多大？")
    assert len(groups) == 2 and {"寿六", "年止", "时年"} <= set(groups[1]) and "寿春" not in groups[1]
    assert len(event_words("关羽是怎么死的？")) == 1 and len(event_words("刘备享年多少岁？")) == 2
    assert event_words("诸葛亮几岁出山？") == []  # an age, but not at a death
