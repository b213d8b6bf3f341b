import re
from itertools import pairwise

import pytest

from ingest.chunking import (
    chunk_document,
    cn_to_int,
    embedding_text,
    parse_heading,
    pieces,
    split_sections,
    split_sentences,
)
from ingest.cleaning import clean_text
from ingest.headings import heading_of
from tests.ingest.fieldcases import field_case

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


def test_each_chunk_records_the_overlap_it_repeats(novel_text):
    text = clean_text(novel_text)
    chunks = chunk_document(text, size=80, overlap=30)
    repeated = [(a, b) for a, b in pairwise(chunks) if b.overlap]
    assert len(repeated) >= 3
    for a, b in pairwise(chunks):
        if b.overlap:  # the overlap is exactly the text the previous chunk ends with
            assert a.chapter == b.chapter and b.start < a.end
            assert b.text[: b.overlap] == text[b.start : a.end] == a.text[len(a.text) - b.overlap :]
            assert b.metadata()["overlap"] == b.overlap
            assert embedding_text(b.text, b.metadata(), with_overlap=False) == b.text[b.overlap :].lstrip()
        else:
            assert "overlap" not in b.metadata()
        assert embedding_text(b.text, b.metadata()) == b.text
    assert all(c.overlap == 0 for c in chunk_document(text, size=80, overlap=0))


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


@pytest.mark.parametrize(
    ("s", "n"),
    [
        *[("３", 3), ("１２", 12), ("廿一", 21), ("卅", 30), ("一〇五", 105), ("二〇", 20), ("两百", 200)],
        *[("壹佰零贰", 102), ("貳拾參", 23), ("陸", 6), ("萬", 10000), ("第", None), ("", None)],
    ],
)
def test_chinese_numerals_in_more_forms(s, n):
    assert cn_to_int(s) == n


@pytest.mark.parametrize(
    ("line", "number", "title"),
    [
        ("第二章雨夜来客", 2, "雨夜来客"),
        ("第一章零界创世公司", 1, "零界创世公司"),
        ("第３章 星火", 3, "星火"),
        ("第１２章：归来", 12, "归来"),
        ("第 3 章 草船借箭", 3, "草船借箭"),
        ("第二十一囘 曹操煮酒論英雄", 21, "曹操煮酒論英雄"),
        ("第一百回", 100, None),
        ("第十章 繁體標題", 10, "繁體標題"),
        ("第廿一回 王熙凤知命强英雄", 21, "王熙凤知命强英雄"),
        ("第卅回 宝钗借扇机带双敲", 30, "宝钗借扇机带双敲"),
        ("第一〇五回 锦衣军查抄宁国府", 105, "锦衣军查抄宁国府"),
        ("第零章 序", 0, "序"),
        ("第两百章 终局", 200, "终局"),
        ("第壹章 起", 1, "起"),
        ("第三节 攻城", 3, "攻城"),
        ("第二卷 赤壁", 2, "赤壁"),
        ("第一篇 总论", 1, "总论"),
        ("第五集 长坂坡", 5, "长坂坡"),
        ("第二部", 2, None),
        ("第七话 星夜", 7, "星夜"),
        ("第七話", 7, None),
        ("## 第3章 草船借箭", 3, "草船借箭"),
        ("第四回·献刀", 4, "献刀"),
        ("【第一章】雨夜来客", 1, "雨夜来客"),
        ("第二章【雨夜来客】", 2, "雨夜来客"),
        ("第五章 谁来了？", 5, "谁来了？"),
    ],
)
def test_chapter_headings_in_the_forms_people_write(line, number, title):
    parsed = parse_heading(line)
    assert parsed is not None
    assert parsed[1:] == (number, title)
    assert isinstance(parsed[1], int)


@pytest.mark.parametrize(
    "line",
    [
        "第一封信",
        "第一次",
        "第一次见面时他很紧张",
        "第一回合结束",
        "第三回合",
        "第二节课",
        "第一部分总则",
        "第一集团军",
        "第三部电影",
        "第二章程序",
        "第一回到家中，他就睡了。",
        "第三天清晨，众人收拾行装出发。",
        "第二章说的是，玄德大喜。",
        "第三回书中说，玄德大喜，" + "甚" * 60,
        "第一章零界创世公司的所有员工都在讨论明天的计划这件事情",
        "第一回 到家他就睡了。",
        "第二章 写得很好，",
    ],
)
def test_lines_that_only_start_like_headings_are_not_headings(line):
    assert parse_heading(line) is None


def test_field_chapters_without_separator_get_numbers_and_titles():
    text = clean_text(field_case("chapters_noseparator.txt").read_text(encoding="utf-8"))
    chunks = chunk_document(text, size=200, overlap=20)
    assert [(c.chapter, c.chapter_title) for c in chunks] == [(1, "零界创世公司"), (2, "雨夜来客"), (3, "星火")]
    meta = chunks[1].metadata()  # what --chapters filters and chapter citations read
    assert (meta["chapter"], meta["chapter_title"], meta["section"]) == (2, "雨夜来客", "第二章雨夜来客")
    assert chunks[2].text.startswith("第三天清晨")  # 第三天 is not a heading


@pytest.mark.parametrize(
    "headings",
    [
        ["第一章风起", "第二章云涌", "第三章雷动"],
        ["第１章 风起", "第２章 云涌", "第３章 雷动"],
        ["第一囘 風起", "第二囘 雲湧", "第三囘 雷動"],
        ["第壹回 风起", "第贰回 云涌", "第叁回 雷动"],
    ],
)
def test_chapter_metadata_follows_every_heading_form(headings):
    text = "".join(f"{h}\n{h[-2:]}之时，众人皆惊。第一次如此。\n" for h in headings)
    chunks = chunk_document(clean_text(text), size=100, overlap=0)
    assert [c.chapter for c in chunks] == [1, 2, 3]
    assert all(c.chapter_title and c.chapter_title.endswith(c.text[:2]) for c in chunks)


def test_sections_under_chapters_keep_the_chapter_number_and_volumes_have_none():
    text = "第一卷 潜龙\n卷首语。\n第一章 出山\n甲。\n第一节 下山\n乙。\n第二节 入城\n丙。\n第二章 赴京\n丁。\n"
    sections = split_sections(text)
    assert [(s.heading, s.chapter, s.chapter_title, s.text) for s in sections] == [
        ("第一卷 潜龙", None, None, "卷首语。"),
        ("第一章 出山", 1, "出山", "甲。"),
        ("第一节 下山", 1, "出山", "乙。"),
        ("第二节 入城", 1, "出山", "丙。"),
        ("第二章 赴京", 2, "赴京", "丁。"),
    ]
    only_sections = split_sections("第一节 下山\n乙。\n第二节 入城\n丙。\n")
    assert [s.chapter for s in only_sections] == [1, 2]


def test_unicode_line_separators_are_not_line_ends_for_headings():
    text = "第一回 甲\n玄德曰\u2028第二回 乙\u2028不可。\n"
    sections = split_sections(text)
    assert [(s.chapter, s.text) for s in sections] == [(1, "玄德曰\u2028第二回 乙\u2028不可。")]


NO_PUNCT = [
    "话说天下大势分久必合合久必分周末七国分争并入于秦及秦灭之后楚汉分争又并入于汉汉朝自高祖斩白蛇而起义一统天下"
    "后来光武中兴传至献帝遂分为三国推其致乱之由殆始于桓灵二帝桓帝禁锢善类崇信宦官及桓帝崩灵帝即位大将军窦武太傅"
    "陈蕃共相辅佐时有宦官曹节等弄权窦武陈蕃谋诛之机事不密反为所害中涓自此愈横",
    "我们今天在会议室讨论了下一季度的产品计划市场部门希望增加广告预算技术部门则认为应该优先解决服务器性能问题"
    "财务部门提醒大家注意成本控制最后总经理决定下周再开一次会议听取各部门的详细方案然后做出最终决定大家都表示同意"
    "会议一直开到晚上八点才结束",
    "幽州太守刘焉出榜招募义兵榜文行到涿县引出涿县中一个英雄那人不甚好读书性宽和寡言语喜怒不形于色素有大志专好"
    "结交天下豪杰生得身长七尺五寸两耳垂肩双手过膝目能自顾其耳面如冠玉唇若涂脂中山靖王刘胜之后汉景帝阁下玄孙姓刘"
    "名备字玄德",
]


def _check_cuts_and_overlap(text: str, size: int, overlap: int) -> None:
    import jieba

    bounds = {0, len(text)} | {e for _, _, e in jieba.tokenize(text)}
    chunks = chunk_document(text + "\n", size=size, overlap=overlap)
    assert len(chunks) >= 3
    assert all(len(c.text) <= size for c in chunks)
    for c in chunks:
        assert c.start in bounds and c.end in bounds, (text[c.start - 2 : c.start + 2], text[c.end - 2 : c.end + 2])
    for a, b in pairwise(chunks):
        assert overlap - 4 <= a.end - b.start <= overlap  # about the configured overlap, in whole words
    assert chunks[0].start == 0 and chunks[-1].end == len(text)


@pytest.mark.parametrize("text", NO_PUNCT)
@pytest.mark.parametrize(("size", "overlap"), [(40, 10), (60, 15)])
def test_long_line_without_punctuation_is_cut_between_words_with_overlap(text, size, overlap):
    _check_cuts_and_overlap(text, size, overlap)


def test_field_long_line_without_punctuation():
    text = clean_text(field_case("long_line_nopunct.txt").read_text(encoding="utf-8")).strip()
    _check_cuts_and_overlap(text, 480, 60)
    chunks = chunk_document(text + "\n", size=480, overlap=60)
    assert not any(a.text.endswith("邹") for a in chunks)


def test_single_word_longer_than_the_size_is_still_cut_at_the_size():
    text = "x" * 130 + "\n"
    chunks = chunk_document(text, size=50, overlap=10)
    assert [len(c.text) for c in chunks] == [50, 50, 30]


@pytest.mark.parametrize(
    ("line", "number", "title"),
    [
        ("卷四 终章", 4, "终章"),
        ("卷之四", 4, None),
        ("卷十二：尘埃落定", 12, "尘埃落定"),
        ("【卷二】", 2, None),
        ("卷3 归来", 3, "归来"),
        ("第一卷 潜龙在渊", 1, "潜龙在渊"),
    ],
)
def test_volume_headings_with_and_without_di(line, number, title):
    h = heading_of(line)
    assert h is not None and (h.level, h.unit, h.number, h.title) == ("volume", "卷", number, title)


@pytest.mark.parametrize(
    "line",
    [
        "卷子",
        "卷起袖子",
        "卷二十年前的旧账",
        "卷四 他走了。",
        "卷一，众人皆惊",
        "第一封信",
        "第一次",
        "第一回合",
        "回合",
    ],
)
def test_words_with_volume_or_chapter_units_are_not_headings(line):
    assert heading_of(line) is None


def _doc(headings: list[str]) -> str:
    return "".join(f"{h}\n{h[-2:]}之时，众人皆惊。\n" for h in headings)


@pytest.mark.parametrize(
    ("headings", "chapters", "unit"),
    [
        (["第一卷 潜龙在渊", "第二卷 龙战于野"], [1, 2], "卷"),
        (["卷一 潜龙", "卷二 见龙", "卷四 终章"], [1, 2, 4], "卷"),
        (["卷之一", "卷之二", "卷之三"], [1, 2, 3], "卷"),
        (["第一部 风起", "第二部 云涌"], [1, 2], "部"),
        (["第一卷 潜龙", "第一节 下山", "第三节 入城", "第二卷 见龙", "第一节 回山"], [1, 1, 1, 2, 2], "卷"),
        # one 章 in the book does not number it: the 卷 repeat
        (["第一卷 潜龙", "第一章 楔子", "第二卷 见龙"], [1, 1, 2], "卷"),
        (["第一卷 潜龙", "第一章 出山", "第二章 赴京", "第二卷 见龙", "第三章 归来"], [None, 1, 2, None, 3], "章"),
        (["第一節 下山", "第二節 入城"], [1, 2], "节"),
    ],
)
def test_chapter_numbers_come_from_the_top_unit_that_repeats(headings, chapters, unit):
    chunks = chunk_document(clean_text(_doc(headings)), size=100, overlap=0)
    assert [c.chapter for c in chunks] == chapters
    assert [c.section for c in chunks] == headings
    numbered = [c.metadata() for c in chunks if c.chapter is not None]
    assert numbered and all(m["chapter_unit"] == unit for m in numbered)
    assert all("chapter_unit" not in c.metadata() for c in chunks if c.chapter is None)


def test_pieces_cut_at_sentence_ends_and_cover_the_text(novel_text):
    text = clean_text(novel_text)[:600]
    got = pieces(text, 60)
    assert len(got) >= 10
    assert all(len(p) <= 60 for p in got)
    # a piece ends where a sentence ends, unless one sentence alone was longer than the piece
    assert sum(p.rstrip().endswith(ENDS) for p in got) >= len(got) - 2
    assert pieces(text, 0) == [text] == pieces(text, len(text))
    assert "".join("".join(got).split()) == "".join(text.split())  # the whole text but its line breaks
    long = "甲" * 130 + "。"
    assert pieces(long, 60) == ["甲" * 60, "甲" * 60, "甲" * 10 + "。"]
