import re
from itertools import pairwise

import pytest

from ingest.chunking import chunk_document, cn_to_int, parse_heading, split_sections, split_sentences
from ingest.cleaning import clean_text

ENDS = tuple("。！？；…”’")


@pytest.mark.parametrize(
    ("s", "n"),
    [
        ("一", 1),
        ("十", 10),
        ("十二", 12),
        ("二十", 20),
        ("三十五", 35),
        ("一百零五", 105),
        ("一百二十", 120),
        ("001", 1),
    ],
)
def test_chinese_numerals(s, n):
    assert cn_to_int(s) == n


def test_headings():
    assert parse_heading("第一百二十回 荐杜预老将献新谋 降孙皓三分归一统") == (
        "第一百二十回 荐杜预老将献新谋 降孙皓三分归一统",
        120,
        "荐杜预老将献新谋 降孙皓三分归一统",
    )
    assert parse_heading("## 第3章 草船借箭") == ("第3章 草船借箭", 3, "草船借箭")
    assert parse_heading("# 前言") == ("前言", None, None)
    assert parse_heading("第三回书中说，玄德大喜，" + "甚" * 60) is None


def test_chunks_carry_chapter_metadata_and_exact_offsets(novel_text):
    text = clean_text(novel_text)
    chunks = chunk_document(text, size=80, overlap=20)
    assert {c.chapter for c in chunks} >= {1, 2, 3}
    for c in chunks:
        assert text[c.start : c.end] == c.text
        assert isinstance(c.chapter, int) or c.chapter is None
        assert len(c.content_hash) == 16
    ch2 = [c for c in chunks if c.chapter == 2]
    assert ch2[0].chapter_title == "三顾茅庐 隆中对策"
    assert all("桃园" not in c.text for c in ch2)  # chapters are never mixed in one chunk


def test_chunks_end_on_sentence_boundaries_and_respect_the_size(novel_text):
    chunks = chunk_document(clean_text(novel_text), size=80, overlap=20)
    body = [c for c in chunks if c.chapter]
    assert all(len(c.text) <= 80 for c in body)
    assert all(c.text.endswith(ENDS) for c in body), [c.text[-5:] for c in body if not c.text.endswith(ENDS)]


def test_overlap_repeats_the_last_sentences(novel_text):
    chunks = [c for c in chunk_document(clean_text(novel_text), size=80, overlap=30) if c.chapter == 3]
    assert len(chunks) >= 3
    overlapping = sum(1 for a, b in pairwise(chunks) if b.start < a.end)
    assert overlapping >= 1
    for a, b in pairwise(chunks):
        assert a.end - b.start <= 30


def test_overlong_sentence_is_cut_at_commas_first():
    sentence = "，".join(["玄德引兵来迎"] * 40) + "。"
    chunks = chunk_document(sentence + "\n", size=50, overlap=0)
    assert len(chunks) > 1
    assert all(len(c.text) <= 50 for c in chunks)
    assert all(c.text.endswith(("，", "。")) for c in chunks)


def test_sentence_split_keeps_closing_quotes_with_the_sentence():
    text = "玄德曰：“吾乃汉室宗亲。”翼德大笑。号为“十常侍”，人皆畏之！"
    parts = [text[s:e] for s, e in split_sentences(text)]
    assert parts == ["玄德曰：“吾乃汉室宗亲。”", "翼德大笑。", "号为“十常侍”，人皆畏之！"]


def test_repeated_chapter_and_table_of_contents_are_dropped():
    chapter = "第二回 甲乙\n玄德大喜。孔明笑曰：“此天意也。”\n"
    text = "第一回 目录一\n第二回 甲乙\n" + "第一回 目录一\n话说天下大势。\n" + chapter + chapter
    sections = split_sections(text)
    assert [(s.chapter, s.text[:4]) for s in sections] == [(1, "话说天下"), (2, "玄德大喜")]


def test_markdown_headings_give_sections():
    md = "# 人物志\n\n## 诸葛亮\n\n孔明，琅琊阳都人。\n\n## 关羽\n\n云长，河东解良人。\n"
    chunks = chunk_document(clean_text(md, blank_lines=True), size=100, overlap=0)
    assert [(c.section, c.text) for c in chunks] == [("诸葛亮", "孔明，琅琊阳都人。"), ("关羽", "云长，河东解良人。")]


def test_token_length_function_is_honoured():
    text = "甲乙丙丁。" * 40 + "\n"
    chunks = chunk_document(text, size=10, overlap=0, length=lambda s: len(re.sub(r"\W", "", s)))
    assert all(len(re.sub(r"\W", "", c.text)) <= 10 for c in chunks)
    assert len(chunks) == 20


def test_overlap_must_be_smaller_than_size():
    with pytest.raises(ValueError, match="overlap"):
        chunk_document("玄德大喜。\n", size=10, overlap=10)
