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

# how the novel tells that someone died (the death itself, not 死战 or 受死: ingest/events.py searches wider)
DIED = re.compile(r"[而已遂乃皆]?(?:死|亡|逝|卒)(?![战守罪地士拒命])|崩|薨|殂|气绝|身亡|遇害|归天|自刎|殒命")
CARRY = 4  # sentences before the filler's that may tell the death and name the one who died


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
    sentence = {(w.passage, w.start): w.text for w in found if w.end - w.start == 1}
    for win in found:
        before = sentence.get((win.passage, win.start - 1), "")
        at_death = win.parts.get("slot") and (DIED.search(win.text) or DIED.search(before))
        win.parts["died"] = 1.0 if at_death else 0.0
        if win.end - win.start != 1 or not win.parts.get("slot") or win.parts.get("entity", 1.0):
            continue
        if win.passage not in passages or any(n in win.text for n in names):
            continue
        died = False
        for back in range(CARRY + 1):
            text = sentence.get((win.passage, win.start - back))
            if text is None:
                break  # the passage's start
            died = died or DIED.search(text) is not None
            told = _QUOTED.sub("", text)
            if back and any(n in told for n in names):
                if died and any(n in told for n in whose):
                    win.parts["entity"] = win.parts["died"] = 1.0
                break


def at_anothers_death(win: Candidate) -> bool:
    """Whether the window tells an age or date at a death (parts["died"]) beside no one the question asks about: after
    the answer's own filler it would offer a second one (曹操's 寿六十六岁 after 张飞's 时年五十五岁)."""
    return bool(win.parts.get("died")) and not win.parts.get("entity", 1.0)


# a quotation, or the part of one a sentence holds (the sentence splitter cuts inside them)
_QUOTED = re.compile(r"“[^”]*(?:”|$)|^[^“]*”")
