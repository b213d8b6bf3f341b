"""Text as search compares it: script, widths, numerals and pinyin names (ingest.normalize), and the tokenizer on it."""

from __future__ import annotations

import pytest

from ingest.keyword import tokenize
from ingest.normalize import (
    PinyinNames,
    fold,
    in_script,
    normalise_numbers,
    number_tokens,
    pinyin_key,
    script_of,
    to_simplified,
    to_traditional,
)


def test_fold_is_one_script_and_ascii_widths() -> None:
    assert fold("關羽是怎麼死的") == "关羽是怎么死的"
    assert fold("关羽是怎么死的？") == "关羽是怎么死的?"  # NFKC: full-width punctuation too
    assert fold("ＡＢＣ１２３") == "ABC123"
    assert fold("一〇五") == "一零五"


def test_conversion_is_opencc_phrase_aware() -> None:
    assert to_simplified("後來於是") == "后来于是"
    assert to_traditional("后来") == "後來"
    assert in_script("劉備", "simplified") == "刘备" and in_script("刘备", "traditional") == "劉備"


@pytest.mark.parametrize("text", ["關羽溫酒斬華雄", "关羽温酒斩华雄", "關羽温酒斬華雄"])
@pytest.mark.parametrize("method", ["ngram", "jieba"])
def test_either_script_gives_the_same_tokens(text: str, method: str) -> None:
    assert tokenize(text, method) == tokenize("关羽温酒斩华雄", method)  # type: ignore[arg-type]


@pytest.mark.parametrize(("a", "b", "value"), [("三千人", "3000人", "3000"), ("三千人", "３０００人", "3000"),
                                               ("一百零五", "一〇五", "105"), ("八十万", "800000", "800000")])
def test_numerals_in_either_form_share_a_token(a: str, b: str, value: str) -> None:
    assert value in tokenize(a) and value in tokenize(b)
    assert number_tokens(a) == [value] and normalise_numbers(fold(b)).startswith(value)


def test_script_of_a_text() -> None:
    assert script_of(["話說天下大勢，分久必合，合久必分。"]) == "traditional"
    assert script_of(["话说天下大势，分久必合，合久必分。"]) == "simplified"
    assert script_of(["hello"]) == "simplified"


def test_pinyin_names_find_names_typed_in_pinyin() -> None:
    assert pinyin_key("诸葛亮") == "zhugeliang" and pinyin_key("刘") is None and pinyin_key("AB") is None
    names = PinyinNames(["刘备", "关羽", "张飞", "诸葛亮", "孔明", "曹操"])
    q = "Where did Liu Bei, Guan Yu and Zhang Fei swear brotherhood?"
    assert names.find(q) == ["刘备", "关羽", "张飞"]
    assert names.find("what did zhuge liang think of CAOCAO") == ["诸葛亮", "曹操"]
    assert names.find("Kongming's plan") == names.find("Kongming’s plan") == ["孔明"]  # a possessive 's is no syllable
    assert names.find("Kongming lit the fire") == ["孔明"]
    assert names.find("he ran to the man") == []  # English words that are syllables name nobody
    assert PinyinNames(["吕布"]).find("Did Lu Bu, Lü Bu or LV BU ride it?") == ["吕布"]  # ü as u, v or ü
    assert PinyinNames(["吕布", "诸葛亮"]).find("Lǚ Bù and Zhūgě Liàng") == ["吕布", "诸葛亮"]  # tone marks
