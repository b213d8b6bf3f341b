"""Queries as people type them, over a real store: either Chinese script, full-width digits and numerals, and names
in pinyin reach the passages; passages are quoted in their own script."""

from __future__ import annotations

import pytest

from ingest import pipeline
from ingest.normalize import to_traditional
from ingest.retrieval import Retriever
from ingest.settings import get_settings

CHAPTERS = {
    1: "刘备、关羽、张飞三人于桃园之中焚香再拜，结为兄弟，誓同生死。刘备为兄，关羽次之，张飞为弟。",
    2: "却说曹操引兵三千人屯于官渡，与袁绍相持。曹操粮尽，许攸来投，曹操跣足出迎。",
    3: "孔明筑七星坛于南屏山，披发仗剑，登坛作法。是夜三更，忽然东风大起。",
    4: "关羽败走麦城，为吴将所擒，不屈而死。刘备闻之，哭倒于地。张飞亦大哭。",
    5: "赵云单骑救主，怀抱阿斗，杀透重围。刘备掷阿斗于地。关羽、张飞皆叹服。",
}


def _kb(root, embedder, convert=lambda s: s):  # type: ignore[no-untyped-def]
    novel = root / "novel.txt"
    novel.write_text("".join(f"第{n}回 回目{n}\n{convert(t)}\n" for n, t in CHAPTERS.items()), encoding="utf-8")
    settings = get_settings(data_dir=root / "data", collection="sg", chunk_size=120, chunk_overlap=0)
    pipeline.add_paths([novel], settings, embedder=embedder)
    # the chunks' own BM25: in five one-chunk chapters a neighbour is a whole other chapter (its names would count)
    return Retriever(settings.model_copy(update={"keyword_neighbour_weight": 0.0}), embedder=embedder)


@pytest.fixture(scope="module")
def simplified(tmp_path_factory, embedder) -> Retriever:
    return _kb(tmp_path_factory.mktemp("simp"), embedder)


@pytest.fixture(scope="module")
def traditional(tmp_path_factory, embedder) -> Retriever:
    return _kb(tmp_path_factory.mktemp("trad"), embedder, to_traditional)


@pytest.mark.parametrize("mode", ["keyword", "hybrid"])
def test_a_traditional_question_finds_a_simplified_corpus(simplified: Retriever, mode: str) -> None:
    assert simplified.script == "simplified"
    hits = simplified.retrieve("關羽敗走麥城，是怎麼死的？", k=2, mode=mode)  # type: ignore[arg-type]
    assert hits[0].chapter == 4
    assert "关羽败走麦城" in hits[0].text  # quoted as the document wrote it


@pytest.mark.parametrize("mode", ["keyword", "dense", "hybrid"])
def test_a_simplified_question_finds_a_traditional_corpus(traditional: Retriever, mode: str) -> None:
    assert traditional.script == "traditional"
    hits = traditional.retrieve("关羽败走麦城，是怎么死的？", k=2, mode=mode)  # type: ignore[arg-type]
    assert hits[0].chapter == 4
    assert "關羽敗走麥城" in hits[0].text  # the document's own script
    terms = [t for group, _ in traditional.query_terms("关羽败走麦城") for t in group]
    assert "麥城" in terms  # terms are matched against the passages' text, so they come in its script


def test_query_terms_weigh_words_the_corpus_lacks_zero(simplified: Retriever) -> None:
    weights = {g[0]: w for g, w in simplified.query_terms("关羽败走麦城时读的牛顿定律")}
    assert weights["麦城"] > 0 and weights["牛顿"] == weights["定律"] == 0.0  # evidence of another subject


@pytest.mark.parametrize("query", ["曹操屯兵官渡有多少人？3000人", "曹操屯兵官渡，３０００人"])
def test_digits_in_any_width_match_chinese_numerals(simplified: Retriever, query: str) -> None:
    tokens, _ = simplified._keyword_query(query)
    assert "3000" in tokens
    scores = simplified.retrieve("３０００人", k=1, mode="keyword")
    assert scores and scores[0].chapter == 2


def test_names_in_pinyin_reach_the_passages_that_name_them(simplified: Retriever, tmp_path, embedder) -> None:
    q = "Where did Liu Bei, Guan Yu and Zhang Fei swear brotherhood?"
    assert {"刘备", "关羽", "张飞"} <= set(simplified.with_names(q).split())
    hits = simplified.retrieve(q, k=1, mode="keyword")
    assert hits and hits[0].chapter == 1
    assert simplified.keyword_top(q)[0] > 0
    plain = simplified.settings.model_copy(update={"query_translation_words": 0})  # English words not translated
    off = Retriever(plain, embedder=embedder, use_aliases=False)
    assert off.retrieve(q, k=1, mode="keyword") == []  # without the pinyin names (or the dictionary): nothing
    assert simplified.retrieve("zhuge liang", k=1, mode="keyword") == []  # not a name of this corpus (孔明 is)
    assert simplified.retrieve(q, k=1)[0].chapter == 1  # hybrid: the dense query carries the names too


def test_the_english_words_of_a_question_reach_the_passages_in_chinese(simplified: Retriever, embedder) -> None:
    q = "Which altar did someone pray on before the wind rose?"  # names no one: CC-CEDICT's 坛, 风
    added = simplified.with_names(q)[len(q):].split()
    assert {"坛", "风"} <= set(added) and len(added) <= 2 * 5  # at most two words for each content word
    assert simplified.retrieve(q, k=1, mode="keyword")[0].chapter == 3
    # an answer's evidence: the names it spells, no dictionary guesses; its English words are terms the corpus lacks
    assert all(w == 0 and t.isascii() for g, w in simplified.query_terms(q) for t in g)
    assert simplified.retrieve("Where did Liu Bei's brothers swear an oath?", k=1, mode="keyword")[0].chapter == 1
    off = Retriever(simplified.settings.model_copy(update={"query_translation_words": 0}), embedder=embedder)
    assert off.with_names(q) == q and off.retrieve(q, k=1, mode="keyword") == []
    assert simplified.with_names("东风 east wind") == "东风 east wind"  # a question with Chinese in it is as typed
