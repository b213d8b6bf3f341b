"""Keyword evidence beyond a chunk's own words: neighbours, chapters, pseudo-relevance feedback; on small inputs and
through a Retriever over a tiny store."""

from __future__ import annotations

import numpy as np
import pytest

from ingest import pipeline
from ingest.evidence import (
    ChapterTitles,
    chapter_groups,
    expansion_terms,
    neighbour_rows,
    with_agreement,
    with_chapter,
    with_neighbours,
    with_terms,
    with_titles,
)
from ingest.keyword import tokenize
from ingest.retrieval import Retriever
from ingest.settings import get_settings


def test_neighbour_rows_follow_each_documents_reading_order_not_the_index_order():
    ids = ["b2", "a1", "a3", "b1", "a2"]  # index rows, in no particular order
    prev, nxt = neighbour_rows([["a1", "a2", "a3"], ["b1", "b2", "gone"]], ids)
    row = {c: r for r, c in enumerate(ids)}
    assert nxt[row["a1"]] == row["a2"] and nxt[row["a2"]] == row["a3"] and nxt[row["a3"]] == -1
    assert prev[row["a1"]] == -1 and prev[row["a3"]] == row["a2"]
    assert prev[row["b2"]] == row["b1"] and nxt[row["b2"]] == -1  # "gone" is not in the index
    assert nxt[row["a3"]] != row["b1"]  # no neighbour across documents


def test_a_chunk_gains_a_share_of_its_better_neighbours_score():
    scores = np.array([0.0, 4.0, 1.0, 0.0, 2.0])
    prev, nxt = neighbour_rows([["c0", "c1", "c2"], ["c3", "c4"]], ["c0", "c1", "c2", "c3", "c4"])
    out = with_neighbours(scores, prev, nxt, 0.5)
    assert out.tolist() == [2.0, 4.5, 3.0, 1.0, 2.0]
    assert with_neighbours(scores, prev, nxt, 0.0) is scores


def test_a_chunk_gains_a_share_of_its_chapters_best_scores():
    scores = np.array([6.0, 0.0, 3.0, 1.0, 2.0, 5.0])
    groups = np.array([0, 0, 0, 0, 1, -1])
    out = with_chapter(scores, groups, 0.5)
    # chapter 0's three best: 6, 3, 1 (mean 10/3); chapter 1: 2; outside any chapter: nothing
    assert out == pytest.approx([6 + 5 / 3, 5 / 3, 3 + 5 / 3, 1 + 5 / 3, 3.0, 5.0])


def test_chapter_groups_keep_documents_apart():
    groups = chapter_groups(np.array(["a", "a", "b", "b", "a"], dtype=object), np.array([1, 2, 1, -1, 1]))
    assert groups[0] == groups[4] and groups[0] != groups[2] and groups[0] != groups[1] and groups[3] == -1


def test_expansion_terms_prefer_rare_words_the_feedback_chunks_share():
    feedback = [["华容", "小路", "曹操", "关公", "放走"], ["华容", "曹操", "关公", "义释"]]
    idf = {"华容": 5.0, "小路": 3.0, "曹操": 0.5, "关公": 1.0, "放走": 3.0, "义释": 4.0, "的": 9.0}
    terms = expansion_terms(feedback, {"关公"}, lambda ts: {t: idf.get(t, 0.0) for t in ts}, 3)
    assert [t for t, _ in terms] == ["华容", "义释", "小路"]  # 关公 is the query's own term; 曹操 is common
    assert sum(w for _, w in terms) == pytest.approx(1.0)
    assert expansion_terms([["的", "了"], ["1", "2"]], set(), lambda ts: dict.fromkeys(ts, 1.0), 5) == []


def test_with_terms_adds_the_terms_weighted_scores():
    columns = {"华容": np.array([0.0, 2.0, 0.0]), "义释": np.array([1.0, 0.0, 0.0])}
    out = with_terms(np.array([1.0, 0.0, 0.0]), [("华容", 0.75), ("义释", 0.25)], columns.__getitem__, 2.0)
    assert out.tolist() == [1.5, 3.0, 0.0]


def test_a_chunk_whose_keyword_piece_is_its_dense_piece_moves_up():
    """Piece agreement: `b`'s piece with the query's words is also its piece nearest the query, so it gains a share
    of a rank-1 vote; `a` holds the words in one piece and is nearest the query in another; `c` is past the head."""
    order = [(c, {"fused": f}) for c, f in (("a", 0.030), ("b", 0.028), ("c", 0.027))]
    pieces = {
        "a": (["关羽斩颜良。", "白马之围解。"], np.array([0.80, 0.90])),
        "b": (["关羽斩颜良于白马。", "曹操大喜。"], np.array([0.88, 0.70])),
        "c": (["关羽斩颜良于白马。"], np.array([0.95])),
    }
    asked: list[list[str]] = []

    def pieces_of(ids):
        asked.append(ids)
        return {c: pieces[c] for c in ids}

    terms = [(["关羽"], 2.0), (["颜良"], 3.0), (["白马"], 1.0)]
    out = with_agreement(order, 2, 1.0, 60, terms, pieces_of)
    assert [c for c, _ in out] == ["b", "a", "c"] and asked == [["a", "b"]]
    assert out[0][1]["agreement"] == 1.0 and abs(out[0][1]["fused"] - (0.028 + 1 / 61)) < 1e-9
    assert "agreement" not in out[1][1] and out[1][1]["fused"] == 0.030
    assert with_agreement(order, 2, 0.0, 60, terms, pieces_of) == order  # weight 0: off


def test_a_title_scores_the_idf_of_the_query_words_it_holds_and_lifts_its_chapters_chunks():
    titles = ChapterTitles({0: "用奇谋孔明借箭 献密计黄盖受刑", 2: "关云长刮骨疗毒 吕子明白衣渡江"}, tokenize, 3)
    idf = {"借箭": 4.0, "孔明": 1.0, "云长": 2.0, "关羽": 2.5, "刮骨": 3.0}
    got = titles.scores(["借箭", "刮骨", "借", "箭"], [["孔明", "诸葛"], ["关羽", "云长"]], idf)
    # single characters never count; a synonym group counts its best name once
    assert got.tolist() == [4.0 + 1.0, 0.0, 3.0 + 2.0]
    groups = np.array([0, 0, 1, 2, -1])
    assert with_titles(np.ones(5), groups, got, 0.5).tolist() == [3.5, 3.5, 1.0, 3.5, 1.0]


CHAPTERS = {
    1: "刘备在桃园中设宴。席间众人饮酒。",
    2: "曹操引兵至华容道，道路狭窄，人困马乏。",
    3: "关公立马于道口，见曹操兵败至此，念及旧恩，遂放开一条大路，义释曹操。",
    4: "孙权在江东整顿兵马，鲁肃献策联合刘备。",
    5: "马超在潼关大战许褚，许褚赤体上阵。",
}
TITLES = {1: "宴桃园豪杰结义", 2: "曹孟德败走华容", 3: "关云长义释曹操", 4: "鲁子敬力排众议", 5: "许褚裸衣斗马超"}


@pytest.fixture(scope="module")
def kb(tmp_path_factory, embedder):
    root = tmp_path_factory.mktemp("kb")
    novel = root / "novel.txt"
    novel.write_text("".join(f"第{n}回 {TITLES[n]}\n{t}\n" for n, t in CHAPTERS.items()), encoding="utf-8")
    settings = get_settings(data_dir=root / "data", collection="ev", chunk_size=60, chunk_overlap=0)
    # every kind of evidence off: each test turns on the one it checks
    settings = settings.model_copy(update={"keyword_neighbour_weight": 0.0, "keyword_title_weight": 0.0})
    pipeline.add_paths([novel], settings, embedder=embedder)
    return settings


def test_neighbour_evidence_adds_the_better_neighbours_keyword_score(kb, embedder):
    query = "华容道 狭窄 人困马乏 放开大路"  # one chunk a chapter here, in chapter order
    plain = Retriever(kb, embedder=embedder).retrieve(query, k=5, mode="keyword")
    base = {h.chapter: h.scores["keyword"] for h in plain}
    lifted = Retriever(kb.model_copy(update={"keyword_neighbour_weight": 0.5}), embedder=embedder)
    got = {h.chapter: h.scores["keyword"] for h in lifted.retrieve(query, k=5, mode="keyword")}
    for c in CHAPTERS:
        assert got[c] == pytest.approx(base.get(c, 0.0) + 0.5 * max(base.get(c - 1, 0.0), base.get(c + 1, 0.0)))


def test_feedback_terms_reach_a_chunk_that_shares_the_first_results_words(kb, embedder):
    query = "狭窄，人困"  # chapter 2's words only; chapter 3 shares 曹操 with chapter 2, chapters 4 and 5 nothing
    plain = Retriever(kb, embedder=embedder).retrieve(query, k=5, mode="keyword")
    assert plain[0].chapter == 2 and 3 not in [h.chapter for h in plain]
    settings = kb.model_copy(update={"feedback_terms": 20, "feedback_docs": 1, "feedback_weight": 0.5})
    hits = Retriever(settings, embedder=embedder).retrieve(query, k=5, mode="keyword")
    assert hits[0].chapter == 2 and 3 in [h.chapter for h in hits]
    assert {4, 5}.isdisjoint(h.chapter for h in hits)


def test_title_evidence_finds_a_chapter_by_words_only_its_title_uses(kb, embedder):
    query = "许褚裸衣"  # 裸衣 is in chapter 5's title only; its text says 赤体
    plain = Retriever(kb, embedder=embedder).retrieve(query, k=5, mode="keyword")
    titled = Retriever(kb.model_copy(update={"keyword_title_weight": 1.0}), embedder=embedder)
    hits = titled.retrieve(query, k=5, mode="keyword")
    assert hits[0].chapter == 5 and hits[0].metadata["chapter_title"] == TITLES[5]
    assert hits[0].scores["keyword"] > next(h.scores["keyword"] for h in plain if h.chapter == 5)
    others = [h.scores["keyword"] for h in plain if h.chapter != 5]
    assert [h.scores["keyword"] for h in hits if h.chapter != 5] == others  # the other titles lack 裸衣


def test_a_title_word_no_text_uses_weighs_as_the_texts_rarest_word(kb, embedder):
    query = "力排众议"  # in chapter 4's title only (as 舌战群儒 is in the novel's): no chunk's text has its words
    assert 4 not in [h.chapter for h in Retriever(kb, embedder=embedder).retrieve(query, k=5, mode="keyword")]
    titled = Retriever(kb.model_copy(update={"keyword_title_weight": 1.0}), embedder=embedder)
    assert titled.retrieve(query, k=5, mode="keyword")[0].chapter == 4
