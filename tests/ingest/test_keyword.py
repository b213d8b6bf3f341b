"""The incremental keyword index: the same scores as a BM25 index built from scratch (bm25s, the reference), on-disk
segments that a refresh only adds to, and crash safety."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from ingest import pipeline
from ingest.kb import open_store, visible_state
from ingest.keyword import KeywordIndex, fingerprint, keyword_query, tokenize
from ingest.settings import get_settings
from ingest.store import StoredChunk

K1, B = 1.2, 0.75
_CHARS = "诸葛亮孔明曹操刘备关羽张飞赤壁东风火攻华容道周瑜鲁肃孙权，。"
QUERIES = ["诸葛亮借东风", "曹操败走华容道", "关羽", "孙权周瑜赤壁火攻"]


def corpus(n: int = 140, seed: int = 0) -> dict[str, str]:
    """Chunks of random length (some empty) over a small alphabet: terms shared by many chunks and by few."""
    rng = random.Random(seed)
    return {f"c{i:03d}": "".join(rng.choice(_CHARS) for _ in range(rng.randint(0, 70))) for i in range(n)}


def fetcher(texts: dict[str, str]):
    def fetch(ids):
        return [StoredChunk(i, texts[i], {"doc_id": f"d{int(i[1:]) // 10}", "chapter": int(i[1:]) % 7}) for i in ids]

    return fetch


def reference(texts: dict[str, str], ids: list[str], query: list[str], synonyms=()) -> dict[str, float]:
    """BM25 of each chunk from a bm25s index built from scratch over exactly these chunks, on the classic scale."""
    import bm25s

    index = bm25s.BM25(k1=K1, b=B, method="lucene")
    index.index([tokenize(texts[i]) for i in ids], show_progress=False)

    def column(tokens):
        known = [t for t in dict.fromkeys(tokens) if t in index.vocab_dict]
        return index.get_scores(known) if known else np.zeros(len(ids))

    out = column(query)
    for group in synonyms:
        out = out + np.max([column([t]) for t in group], axis=0)
    return dict(zip(ids, out * (K1 + 1), strict=True))


def assert_same_as_fresh(index: KeywordIndex, texts: dict[str, str], ids: list[str]) -> None:
    assert index.bm25 is not None and sorted(index.bm25.ids) == sorted(ids)
    rows = {i: r for r, i in enumerate(index.bm25.ids)}
    for q in QUERIES:
        synonyms = [["孔明", "诸葛"], ["华容", "曹操", "不在"]]
        got = index.bm25.scores(tokenize(q), synonyms)
        want = reference(texts, ids, tokenize(q), synonyms)
        assert got == pytest.approx(np.array([want[i] for i in index.bm25.ids]), rel=1e-5, abs=1e-5)
    # the filters' arrays follow the rows
    assert [index.doc_ids[rows[i]] for i in ids] == [f"d{int(i[1:]) // 10}" for i in ids]
    assert [index.chapters[rows[i]] for i in ids] == [int(i[1:]) % 7 for i in ids]
    # idf on Lucene's formula over the live chunks (0 for a token none of them has)
    df = sum("赤壁" in tokenize(texts[i]) for i in ids)
    want = np.log(1 + (len(ids) - df + 0.5) / (df + 0.5)) if df else 0.0
    assert index.bm25.idf(["赤壁", "不在"]) == pytest.approx({"赤壁": want, "不在": 0.0})


def test_incremental_index_scores_as_a_fresh_bm25s_index_after_adds_and_removes(tmp_path):
    texts = corpus()
    fetch = fetcher(texts)
    names = sorted(texts)
    index = KeywordIndex(tmp_path)
    ids = names[:60]
    index.build(fingerprint(ids), ids, fetch)
    assert_same_as_fresh(index, texts, ids)
    rng = random.Random(1)
    seen_merge = False
    for step in range(16):  # one small document at a time; every third step also removes some chunks
        ids = ids + names[60 + 5 * step : 65 + 5 * step]
        if step % 3 == 2:
            ids = [i for i in ids if rng.random() > 0.15]
        index.build(fingerprint(ids), ids, fetch)
        assert index.bm25 is not None
        seen_merge |= len(index.bm25.segments) < step + 2
        assert_same_as_fresh(index, texts, ids)
        reader = KeywordIndex(tmp_path)  # another process: loads what the writer saved
        assert reader.try_load(fingerprint(ids))
        assert_same_as_fresh(reader, texts, ids)
    assert seen_merge  # ten small segments were merged into one on the way
    ids = names[100:110]  # nearly everything removed: emptied segments go, mostly dead ones are rewritten
    index.build(fingerprint(ids), ids, fetch)
    assert_same_as_fresh(index, texts, ids)
    assert index.bm25 is not None and all(2 * s.live > len(s.ids) for s in index.bm25.segments)
    index.build(fingerprint([]), [], fetch)
    assert index.bm25 is not None and index.bm25.ids == [] and len(index.bm25.scores(["赤壁"])) == 0


def test_bm25_built_in_memory_scores_as_bm25s():
    from ingest.keyword import BM25

    texts = corpus(seed=3)
    ids = sorted(texts)
    bm25 = BM25(ids, [tokenize(texts[i]) for i in ids])
    for q in QUERIES:
        want = reference(texts, ids, tokenize(q))
        assert bm25.scores(tokenize(q)) == pytest.approx(np.array([want[i] for i in ids]), rel=1e-5, abs=1e-5)


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_a_refresh_writes_only_the_new_segment_and_the_manifest(tmp_path):
    texts = corpus()
    fetch = fetcher(texts)
    ids = sorted(texts)[:100]
    index = KeywordIndex(tmp_path)
    index.build(fingerprint(ids), ids, fetch)
    before = _files(tmp_path)
    assert sorted(n.split("-")[0] for n in before) == ["manifest", "seg", "seg"]  # rows and term counts
    ids += sorted(texts)[100:103]
    index.build(fingerprint(ids), ids, fetch)
    after = _files(tmp_path)
    assert sorted(n.split(".", 1)[1] for n in set(after) - set(before)) == ["rows.pkl", "terms.pkl"]
    assert all(n.startswith("seg-ngram-") for n in set(after) - set(before))
    assert {n: v for n, v in after.items() if n in before and not n.startswith("manifest")} == {
        n: v for n, v in before.items() if not n.startswith("manifest")
    }
    ids = [i for i in ids if i not in {"c005", "c101"}]  # removing rewrites nothing but the manifest
    index.build(fingerprint(ids), ids, fetch)
    removed = _files(tmp_path)
    assert set(removed) == set(after)
    assert [n for n in removed if removed[n] != after[n]] == ["manifest-ngram.json"]
    manifest = json.loads((tmp_path / "manifest-ngram.json").read_text(encoding="utf-8"))
    assert sorted(len(s["dead"]) for s in manifest["segments"]) == [1, 1]
    assert_same_as_fresh(index, texts, ids)


def test_a_segment_written_without_its_manifest_is_ignored(tmp_path):
    """What a writer killed between its segment and its manifest leaves: readers keep the old index, and the next
    writer deletes the stray segment."""
    texts = corpus()
    fetch = fetcher(texts)
    old = sorted(texts)[:80]
    KeywordIndex(tmp_path).build(fingerprint(old), old, fetch)
    other = tmp_path.parent / "other"
    shutil.copytree(tmp_path, other)
    new = old + sorted(texts)[80:90]
    KeywordIndex(other).build(fingerprint(new), new, fetch)
    strays = set(_files(other)) - set(_files(tmp_path))
    assert len(strays) == 2
    for stray in strays:
        shutil.copy(other / stray, tmp_path / stray)  # the segment reached the disk, its manifest did not
    reader = KeywordIndex(tmp_path)
    assert not reader.try_load(fingerprint(new))
    assert reader.try_load(fingerprint(old))
    assert_same_as_fresh(reader, texts, old)
    reader.build(fingerprint(new), new, fetch)
    assert_same_as_fresh(reader, texts, new)
    assert not strays & set(_files(tmp_path))
    assert sorted(n.split("-")[0] for n in _files(tmp_path)) == ["manifest"] + ["seg"] * 4


def one_segment(folder: Path, n: int):
    """An index of the first n chunks, saved under folder: its texts, fetch, ids and its term counts' file."""
    texts = corpus()
    fetch = fetcher(texts)
    ids = sorted(texts)[:n]
    KeywordIndex(folder).build(fingerprint(ids), ids, fetch)
    (terms,) = folder.glob("seg-*.terms.pkl")
    return texts, fetch, ids, terms


def test_a_manifest_naming_a_missing_or_damaged_segment_is_rebuilt(tmp_path):
    texts, fetch, ids, seg = one_segment(tmp_path, 50)
    seg.write_bytes(b"half a pickle")
    reader = KeywordIndex(tmp_path)
    assert not reader.try_load(fingerprint(ids))
    reader.build(fingerprint(ids), ids, fetch)
    assert_same_as_fresh(reader, texts, ids)
    seg.unlink(missing_ok=True)
    assert KeywordIndex(tmp_path).try_load(fingerprint(ids))


def test_a_writer_adding_a_segment_reads_no_other_segment_s_term_counts(tmp_path):
    texts, fetch, ids, terms = one_segment(tmp_path, 100)
    good = terms.read_bytes()
    terms.write_bytes(b"not read by an append")
    more = ids[3:] + sorted(texts)[100:104]
    KeywordIndex(tmp_path).build(fingerprint(more), more, fetch)  # another process: appends, marks dead rows
    assert not KeywordIndex(tmp_path).try_load(fingerprint(more))  # a reader does read them: damaged, refused
    terms.write_bytes(good)
    reader = KeywordIndex(tmp_path)
    assert reader.try_load(fingerprint(more))
    assert_same_as_fresh(reader, texts, more)


def test_a_folder_it_cannot_write_still_serves_from_memory(tmp_path):
    texts = corpus()
    (tmp_path / "data").write_text("a file where the index's folder should be", encoding="utf-8")
    index = KeywordIndex(tmp_path / "data" / "keyword")  # mkdir fails, as on a read-only disk, also for root
    ids = sorted(texts)[:40]
    index.build(fingerprint(ids), ids, fetcher(texts))
    assert_same_as_fresh(index, texts, ids)
    ids = ids[5:] + sorted(texts)[40:45]
    index.build(fingerprint(ids), ids, fetcher(texts))
    assert_same_as_fresh(index, texts, ids)


def test_adding_and_removing_documents_through_the_pipeline_updates_the_index_in_place(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    chapters = ["孔明借东风，周瑜火烧赤壁。", "关羽温酒斩华雄，威震诸侯。", "曹操败走华容道，关羽义释之。"]
    (docs / "a.txt").write_text("".join(f"第{n + 1}回\n{t * 6}\n" for n, t in enumerate(chapters)), encoding="utf-8")
    (docs / "b.txt").write_text("刘备三顾茅庐，诸葛亮隆中对策。" * 8, encoding="utf-8")
    settings = get_settings(data_dir=tmp_path / "data", collection="kw", chunk_size=60, chunk_overlap=0)
    pipeline.add_paths([docs / "a.txt", docs / "b.txt"], settings, embed=False)
    folder = settings.keyword_dir / "kw"
    first = _files(folder)
    (docs / "c.txt").write_text("张飞大闹长坂桥，喝退曹兵百万。" * 8, encoding="utf-8")
    pipeline.add_paths([docs / "c.txt"], settings, embed=False)
    added = _files(folder)
    assert len(added) == len(first) + 2  # the new segment's rows and term counts
    assert all(added[n] == v for n, v in first.items() if n.startswith("seg-"))  # old segments untouched
    pipeline.remove_documents([str(docs / "b.txt")], settings)
    removed = _files(folder)
    assert set(removed) == set(added) and all(removed[n] == v for n, v in added.items() if n.startswith("seg-"))

    store = open_store(settings)
    _, ids, fp = visible_state(store)
    texts = {c.chunk_id: c.text for c in store.get_chunks(ids)}
    index = KeywordIndex(folder)
    assert index.try_load(fp)
    assert index.bm25 is not None and sorted(index.bm25.ids) == ids
    for q in ("长坂桥", "隆中", "关羽华容道"):
        got = dict(zip(index.bm25.ids, index.bm25.scores(tokenize(q)), strict=True))
        want = reference(texts, ids, tokenize(q))
        assert [got[i] for i in ids] == pytest.approx([want[i] for i in ids], rel=1e-5, abs=1e-5)
    top = index.bm25.ids[int(np.argmax(index.bm25.scores(tokenize("长坂桥"))))]
    assert "长坂桥" in texts[top]
    assert max(index.bm25.scores(tokenize("隆中"))) == 0  # the removed document is not found


def test_merges_never_make_a_segment_past_the_cap_and_scores_stay_exact(tmp_path):
    """As Lucene's maxMergedSegmentMB: ten small segments merge only as far as max_merged_rows allows, so a writer's
    memory in a merge is bounded however many documents pile up."""
    texts = corpus()
    fetch = fetcher(texts)
    names = sorted(texts)
    index = KeywordIndex(tmp_path, max_merged_rows=12)
    ids: list[str] = []
    for step in range(25):  # 25 documents of 4 chunks, one at a time
        ids = ids + names[4 * step : 4 * step + 4]
        index.build(fingerprint(ids), ids, fetch)
    assert index.bm25 is not None
    sizes = [s.live for s in index.bm25.segments]
    assert max(sizes) <= 12 < max(sizes) * 2 and len(sizes) < 25  # merged, never past the cap
    assert_same_as_fresh(index, texts, ids)
    reader = KeywordIndex(tmp_path)  # another process: loads what the writer saved
    assert reader.try_load(fingerprint(ids))
    assert_same_as_fresh(reader, texts, ids)


def test_an_english_querys_function_words_are_not_searched():
    from ingest.keyword import keyword_query

    tokens, _ = keyword_query("who built the lighthouse of port alder?", None, "jieba")
    assert {"built", "lighthouse", "port", "alder"} <= set(tokens) and not {"who", "the", "of"} & set(tokens)
    assert keyword_query("关羽是怎么死的", None, "jieba")[0] == tokenize("关羽是怎么死的", "jieba")  # Chinese as it was


def test_a_measure_word_is_searched_in_either_writing():
    """The novel writes 十万枝箭 where a question says 十万支箭 (and the other way round): either writing matches, as
    one synonym group."""
    tokens, groups = keyword_query("孔明借了多少支箭", None, "ngram")
    assert ["支箭", "枝箭"] in groups and "支箭" not in tokens and "借了" in tokens
    assert ["万枝", "万支"] in keyword_query("十万枝箭", None, "ngram")[1]
