"""Events that a modern question and a classical narrative name in different words: the words a Chinese novel
tells them with, joined to the keyword side of a question about one.

A question asks how, where, when or at what age someone died (关羽是怎么死的？ 刘备死在哪里？ 孙策死时多大？) in
modern words; 三国演义 tells a death as 遇害, 崩, 薨, 卒, 亡, 殒命, 归天, 自刎… (关公父子皆遇害; 驾崩，寿六十三岁),
and chapter titles say it too (白门楼吕布殒命, 急兄仇张飞遇害). The words go to the keyword query as one synonym
group (a passage counts the best of them once, so one dense with deaths does not outrank the person's own), and to
the chapter titles' evidence. Measured in BENCHMARKS.md (the death passage of 13 famous deaths in the top 5: 3 -> 7).
"""

from __future__ import annotations

import re

# a question about a death: Chinese, or English (the query translation gives the corpus's words for the rest)
_DEATH_QUESTION = re.compile(
    r"死|去世|逝世|过世|身亡|丧命|遇害|被杀|阵亡|活了多少|享年|终年|\b(?:die|died|dies|death|killed)\b", re.IGNORECASE
)
# how the classical novel says that someone died
DEATH_WORDS = ["亡", "卒", "崩", "薨", "殁", "殂", "遇害", "身亡", "身死", "殒命", "归天", "自刎", "死"]


# a question about the age someone died at (孙策死时多大？ 刘备享年多少岁？), and how the novel tells it: 寿六十六岁,
# 年止二十六岁, 时年五十五岁, 亡年五十八岁 (寿 before a numeral: 寿春 is a city)
_AGE_QUESTION = re.compile(r"多大|几岁|多少岁|年纪|岁数|享年|终年|高寿|活了|\bhow old\b|\bage\b", re.IGNORECASE)
AGE_WORDS = [f"寿{n}" for n in "二三四五六七八九止"] + ["年止", "时年", "亡年", "享年", "终年"]


def event_words(query: str) -> list[list[str]]:
    """Synonym groups for the events the query asks about: [DEATH_WORDS] for a death, and [AGE_WORDS] for the age
    at it; none otherwise."""
    if not _DEATH_QUESTION.search(query):
        return []
    return [list(DEATH_WORDS), list(AGE_WORDS)] if _AGE_QUESTION.search(query) else [list(DEATH_WORDS)]
