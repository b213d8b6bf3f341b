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
_DEATH_QUESTION = re.compile(r"死|去世|逝世|过世|身亡|丧命|遇害|被杀|阵亡|活了多少|\b(?:die|died|dies|death|killed)\b",
                             re.IGNORECASE)
# how the classical novel says that someone died
DEATH_WORDS = ["亡", "卒", "崩", "薨", "殁", "殂", "遇害", "身亡", "身死", "殒命", "归天", "自刎", "死"]


def event_words(query: str) -> list[list[str]]:
    """Synonym groups for the events the query asks about: [DEATH_WORDS] for a death, none otherwise."""
    return [list(DEATH_WORDS)] if _DEATH_QUESTION.search(query) else []
