"""Whom a sentence without a subject is about: a death's age or date, told after it (…须臾，气绝而死。寿六十六岁。).

The novel names the dying person, reports their last words, then tells the death and the age or year in sentences
that name no one (言讫，瞑目而逝。年止二十六岁。 / 驾崩，寿六十三岁。时章武三年夏四月二十四日也。). A number or date
question is declined when no sentence offers a filler beside whom it asks about (extractive.FILLED_KINDS); for a
question about a death, a filler sentence that names no one and follows the death (a death word in it or in the
CARRY sentences before it), in a passage that names the person, is about them.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Protocol

from .question import PLACE_SUFFIX

# how the novel tells that someone died (the death itself, not 死战, 受死 or 至死方休: ingest/events.py searches wider)
DIED = re.compile(r"[而已遂乃皆]?(?:(?<![至誓拼效冒])死|亡|逝|卒)(?![战守罪地士拒命])"
                  r"|崩|薨|殂|气绝|身亡|遇害|归天|自刎|殒命")
CARRY = 6  # sentences before the filler's that may tell the death and name the one who died
# a mined "name" that is not someone: an era before its year (时建兴 of 时建兴十二年) or a place (铜雀台, 城南)
_ERA_YEAR = re.compile(r"[零〇一二两三四五六七八九十百元]")
PLACE_END = PLACE_SUFFIX + "门"


class Candidate(Protocol):
    passage: int
    start: int
    end: int
    text: str
    parts: dict[str, float]


def carried_over(
    found: Sequence[Candidate], passages: Collection[int], names: Collection[str], whose: Collection[str]
) -> None:
    """Mark (parts["entity"] = 1) each one-sentence window of `found` that offers a filler (parts["slot"]), names
    none of `names` (the knowledge base's names in the candidates) and stands in one of `passages` (those naming whom
    the question asks about), when it or the CARRY sentences before it tell a death and the nearest of them that
    names someone (outside a quotation: 周郎 addressed in a dying man's words is not the one dying) names one of
    `whose` (whom the question asks about: 飞大叫一声而亡。时年五十五岁。). Every window gets a "died" part: 1 for
    one whose filler is told at the death (carried, or a death word in it or the sentence before it: 睿年至十五岁 is
    no age at his death)."""
    names = [n for n in names if n[-1] not in PLACE_END]
    sentence = {(w.passage, w.start): w.text for w in found if w.end - w.start == 1}
    for win in found:
        before = sentence.get((win.passage, win.start - 1), "")
        at_death = win.parts.get("slot") and (DIED.search(win.text) or DIED.search(before))
        win.parts["died"] = 1.0 if at_death else 0.0
        if win.end - win.start != 1 or not win.parts.get("slot") or win.parts.get("entity", 1.0):
            continue
        if win.passage not in passages or _names_someone(win.text, names):
            continue
        died = False
        for back in range(CARRY + 1):
            text = sentence.get((win.passage, win.start - back))
            if text is None:
                break  # the passage's start
            died = died or DIED.search(text) is not None
            told = _QUOTED.sub("", text)
            if back and _names_someone(told, names):
                if died and _names_someone(told, whose):
                    win.parts["entity"] = win.parts["died"] = 1.0
                break


def _names_someone(text: str, names: Collection[str]) -> bool:
    """Whether `text` holds one of `names` not followed by a year's numeral (an era: 建兴十二年)."""
    for n in names:
        at = text.find(n)
        while at >= 0:
            if not _ERA_YEAR.match(text, at + len(n)):
                return True
            at = text.find(n, at + 1)
    return False


def anothers_filler(win: Candidate) -> bool:
    """Whether the window offers a filler (an age, a date, a number) beside no one the question asks about, or, for
    a question about a death, one not told at a death: after the answer's own it would offer a second, someone
    else's (曹操's 寿六十六岁 after 张飞's 时年五十五岁, 诸葛尚's 时年一十九岁 after 孔明's 寿五十四岁)."""
    if win.parts.get("slot") and "died" in win.parts and not win.parts["died"]:
        return True  # a question about a death: a number not told at one is another's (朕幼子曹芳，年才八岁)
    return bool(win.parts.get("slot")) and not win.parts.get("entity", 1.0)


# a quotation, or the part of one a sentence holds (the sentence splitter cuts inside them)
_QUOTED = re.compile(r"“[^”]*(?:”|$)|^[^“]*”")
