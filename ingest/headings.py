"""Headings of Chinese documents: 第N回/章/节/卷 and 卷N as people write them, Markdown headings, Chinese numerals."""

from __future__ import annotations

import re
from dataclasses import dataclass

_CN_DIGITS = {
    **dict.fromkeys("零〇", 0),
    **dict.fromkeys("一壹", 1),
    **dict.fromkeys("二两兩贰貳", 2),
    **dict.fromkeys("三叁參", 3),
    **dict.fromkeys("四肆", 4),
    **dict.fromkeys("五伍", 5),
    **dict.fromkeys("六陆陸", 6),
    **dict.fromkeys("七柒", 7),
    **dict.fromkeys("八捌", 8),
    **dict.fromkeys("九玖", 9),
}
_CN_UNITS = {
    **dict.fromkeys("十拾", 10),
    **dict.fromkeys("百佰", 100),
    **dict.fromkeys("千仟", 1000),
    **dict.fromkeys("万萬", 10000),
}
_CN_TENS = {"廿": 20, "卅": 30, "卌": 40}  # classical: 廿一 = 21
_CN_NUM = "0-9０-９" + "".join(_CN_DIGITS) + "".join(_CN_UNITS) + "".join(_CN_TENS)
# Units of a heading, by level: volumes hold chapters, chapters hold sections.
_VOLUME_UNITS, _CHAPTER_UNITS, _SECTION_UNITS = "卷部篇集", "回囘章话話", "节節"
# 第N + unit + the rest of the line (the title, after an optional separator); 【第N章】 in brackets too.
CHAPTER_HEADING = re.compile(
    rf"^[【\[〔（(]?\s?第\s?([{_CN_NUM}]+)\s?([{_VOLUME_UNITS}{_CHAPTER_UNITS}{_SECTION_UNITS}])([】\]〕）)]?)(.*)$"
)
# 卷 + numeral with no 第, as old books and some web novels write volumes: 卷四 终章, 卷之四, 【卷二】.
VOLUME_HEADING = re.compile(rf"^[【\[〔（(]?\s?卷\s?(之)?\s?([{_CN_NUM}]+)([】\]〕）)]?)(.*)$")
# The start of such a heading, for other modules' patterns (cleaning keeps these lines apart).
HEADING_START = (
    rf"[【\[〔（(]?\s?(?:第\s?[{_CN_NUM}]+\s?[{_VOLUME_UNITS}{_CHAPTER_UNITS}{_SECTION_UNITS}]|卷\s?之?\s?[{_CN_NUM}]+)"
)
# The unit a heading is written with, in one spelling (囘 and 回 are one unit).
_UNIT_SPELLING = str.maketrans("囘話節", "回话节")
_TITLE_SEPARATOR = re.compile(r"^[\s:：.．、·\-—_]+")
# After a unit with no separator, these begin a word with the unit (第一回合, 第二节课), not a title.
_NOT_A_TITLE_AFTER = {
    "回": "合头家来去忆复答应报收归顾声想到过事",
    "囘": "合",
    "章": "程法节",
    "话": "题说语剧费筒",
    "节": "课目日约省奏点制气拍假",
    "節": "課目日約省奏點制氣拍假",
    "卷": "子入起宗烟轴尺曲发",
    "話": "題說語劇費筒",
}
_SENTENCE_MARK = re.compile(r"[。，,；;！!？?、…“”「」]")
_SENTENCE_END = re.compile(r"[。，,；;]$")
_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*$")


def chapter_label(chapter: int, unit: str | None = None) -> str:
    """How a chunk's chapter is named to a reader: 第12回, 第3章, 第2卷 (`unit` from the chunk's `chapter_unit`
    metadata; 回 for stores written before it was recorded)."""
    return f"第{chapter}{unit or '回'}"


def cn_to_int(s: str) -> int | None:
    """Parse a chapter number in digits (also full-width) or Chinese numerals, None when it is not one.

    "一百二十" -> 120, "035" -> 35, "３" -> 3, "廿一" -> 21, "一〇五" -> 105 (digit by digit), "壹佰零贰" -> 102.
    """
    if not s:
        return None
    if s.isdecimal():
        return int(s)
    if len(s) > 1 and all(ch in _CN_DIGITS or ch.isdecimal() for ch in s):
        return int("".join(str(_CN_DIGITS.get(ch, ch)) for ch in s))
    total, section, digit = 0, 0, None
    for ch in s:
        if ch in _CN_DIGITS:
            digit = _CN_DIGITS[ch]
        elif ch.isdecimal():
            digit = int(ch)
        elif ch in _CN_TENS:
            section += _CN_TENS[ch]
            digit = None
        elif ch in _CN_UNITS:
            unit = _CN_UNITS[ch]
            if unit == 10000:
                total += ((section + (digit or 0)) or 1) * unit
                section = 0
            else:
                section += (1 if digit is None else digit) * unit
            digit = None
        else:
            return None
    return total + section + (digit or 0)


@dataclass(frozen=True)
class Heading:
    """A heading line: its text, and for 第N回/章/节/卷 headings the number, title and level."""

    text: str
    number: int | None = None
    title: str | None = None
    level: str = "markdown"  # "volume" (卷部篇集), "chapter" (回章话), "section" (节) or "markdown"
    unit: str | None = None  # the unit character as written, one spelling: 回 章 话 节 卷 部 篇 集


def _word_ends_at(line: str, pos: int) -> bool:
    """Whether jieba puts a word boundary at `pos` (第一回|合 is one word, 第二章|雨夜 is not)."""
    from .quiet import load_jieba

    jieba = load_jieba()
    return any(end == pos for _, _, end in jieba.tokenize(line))


def _chapter_heading(s: str) -> Heading | None:
    m = CHAPTER_HEADING.match(s)
    number = cn_to_int(m.group(1)) if m else None
    if m is None or number is None:
        return None
    unit, closing, rest = m.group(2), m.group(3), m.group(4)
    sep = _TITLE_SEPARATOR.match(rest)
    if sep or (closing and rest):
        title = rest[sep.end() if sep else 0 :].strip()
        if _SENTENCE_END.search(title):  # "第一回 到家他就睡了。" is prose
            return None
    elif rest:
        # No separator (第二章雨夜来客): only a short line, with no sentence in it, whose unit is not the first
        # character of a word (第一回合, 第二节课, 第一部分). Volumes (卷部篇集) need a separator.
        if (
            unit in _VOLUME_UNITS
            or len(s) > 24
            or _SENTENCE_MARK.search(rest)
            or rest[0] in _NOT_A_TITLE_AFTER.get(unit, "")
            or not _word_ends_at(s, m.start(4))
        ):
            return None
        title = rest.strip()
    else:
        title = ""
    level = "volume" if unit in _VOLUME_UNITS else "section" if unit in _SECTION_UNITS else "chapter"
    return Heading(s, number, title.strip("【】[]〔〕") or None, level, unit.translate(_UNIT_SPELLING))


def _volume_heading(s: str) -> Heading | None:
    """卷四 终章, 卷之四, 【卷二】: 卷 and a numeral at the start of a short line, then nothing or a separated title.
    卷子, 卷起, 卷二十年前… (no separator after the numeral) are not headings."""
    m = VOLUME_HEADING.match(s)
    number = cn_to_int(m.group(2)) if m else None
    if m is None or number is None or len(s) > 30:
        return None
    closing, rest = m.group(3), m.group(4)
    sep = _TITLE_SEPARATOR.match(rest)
    if rest and not sep and not closing:
        return None
    title = rest[sep.end() if sep else 0 :].strip()
    if _SENTENCE_MARK.search(title):
        return None
    return Heading(s, number, title.strip("【】[]〔〕") or None, "volume", "卷")


def heading_of(line: str) -> Heading | None:
    """The heading on this line (a Markdown heading, or 第N回/章/节/卷 on a short line of its own), else None."""
    s = line.strip()
    md = _MD_HEADING.match(s)
    if md:
        s = md.group(2).strip()
    elif len(s) > 60:
        return None
    if not s:
        return None
    chapter = _chapter_heading(s) or _volume_heading(s)
    if chapter is not None:
        return chapter
    return Heading(s) if md else None


def parse_heading(line: str) -> tuple[str, int | None, str | None] | None:
    """(heading text, chapter number, chapter title) when the line is a heading, else None."""
    h = heading_of(line)
    return None if h is None else (h.text, h.number, h.title)
