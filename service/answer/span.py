"""The short answer that leads an extractive reply: the slot filler (a name, place, number, date) or the clause of
the chosen sentence that lines up with the question's words around its slot."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Any

from ingest.aliases import surname
from ingest.chunking import split_sentences
from ingest.entities import introduced

from .decline import FUNCTION_CHARS, HAN_CHAR
from .question import Shape

_CLAUSE_END = re.compile(r"[，；：、。！？“”‘’「」\n]")
_HAN = re.compile(r"[\u4e00-\u9fff]")
MAX_SPAN_CHARS = 20


def context_terms(shape: Shape, reach: int = 3) -> list[str]:
    """The question's content characters nearest its slot: up to `reach` before the question word and `reach`
    after it, function characters (的, 是, 了…) left out."""
    left = [c for c in HAN_CHAR.findall(shape.left) if c not in FUNCTION_CHARS][-reach:]
    right = [c for c in HAN_CHAR.findall(shape.right) if c not in FUNCTION_CHARS][:reach]
    return sorted(set(left + right))


def _question_chars(question: str) -> set[str]:
    return set(_HAN.findall(question))


def _distance(a: int, b: int, points: list[int]) -> int:
    """Characters between the span [a, b) and the nearest of `points` (a large number when there are none)."""
    return min((a - p if p < a else p - b + 1 for p in points if not a <= p < b), default=10_000)


def filler_span(
    text: str, fillers: list[tuple[int, int]], question: str, shape: Shape, same_entity: Collection[str] = ()
) -> str | None:
    """The filler of `text` nearest the question's words there: the one right after the words before the slot or
    right before the words after it wins; None when there is no filler (or each names the question's own entity,
    `same_entity`: its other names)."""
    best = aligned_filler(text, fillers, question, shape, same_entity)
    return best[1] if best else None


def aligned_filler(
    text: str, fillers: list[tuple[int, int]], question: str, shape: Shape, same_entity: Collection[str] = ()
) -> tuple[float, str] | None:
    """filler_span's choice with its distance score (characters to the question's words, less 3 for each side of
    the slot it lines up with): lower is better."""
    qchars = _question_chars(question)
    # the unit or classifier a number question counts in: the character after 多少, or the one 几 is joined to
    unit = "" if shape.kind != "number" else shape.wh[-1] if shape.wh.startswith("几") and len(shape.wh) > 1 else (
        shape.right[:1] if shape.wh == "多少" else "")
    anchors = [i for i, c in enumerate(text) if c in qchars]
    best: tuple[float, str] | None = None
    for a, b in fillers:
        span = text[a:b]
        if span in same_entity or any(span in n or n in span for n in same_entity if len(n) >= 2):
            continue
        score = float(_distance(a, b, anchors))
        if shape.left and text[max(0, a - 4) : a].endswith(shape.left[-1:]):
            score -= 3
        if shape.right and text[b : b + 4].startswith(shape.right[:1]):
            score -= 3
        if unit and unit in span:  # 多少里 -> 七百余里, not 四十余屯
            score -= 3
        if best is None or score < best[0]:
            best = (score, span)
    return best


def shares_sentence(a: str, b: str) -> bool:
    """Whether one text holds a whole sentence (6+ Chinese characters) of the other: chunk overlap repeats a
    passage's sentences in the next passage."""
    return any(len(_HAN.findall(t[i:j])) >= 6 and t[i:j].strip() in u
               for t, u in ((a, b), (b, a)) for i, j in split_sentences(t))  # fmt: skip


def clause_span(text: str, question: str, shape: Shape) -> str:
    """The clause of `text` that best answers a what / how / why question: it shares the question's words around
    the slot and adds words the question does not have. At most MAX_SPAN_CHARS characters."""
    qchars = _question_chars(question)
    near = set(_HAN.findall(shape.left[-4:] + shape.right[:4])) or qchars
    clauses = [c.strip() for c in _CLAUSE_END.split(text) if len(_HAN.findall(c)) >= 2]
    if not clauses:
        return text.strip()[:MAX_SPAN_CHARS]
    best, best_score = clauses[0], -1.0
    for i, clause in enumerate(clauses):
        han = _HAN.findall(clause)
        new = sum(c not in qchars for c in han) / len(han)
        if new < 0.34:  # the clause only restates the question
            continue
        before = clauses[i - 1] if i else ""
        shared = sum(c in near for c in set(han)) + 0.5 * sum(c in near for c in set(_HAN.findall(before)))
        score = shared + new - 0.02 * len(han)
        if score > best_score:
            best, best_score = clause, score
    return best[:MAX_SPAN_CHARS]


def introduced_lead(
    texts: Sequence[str], question: str, names: Collection[str], same_entity: Collection[str] = ()
) -> str:
    """A who question's short answer from the sentences its answer quotes (`texts`), when they introduce one person
    by surname and given name (ingest.entities.introduced) whom the question does not name (nor by another name,
    `same_entity`) and the text names on its own too (`names`): 孔秀 for 关羽过东岭关时斩杀的守将叫什么
    (把关将姓孔，名秀); "" when they introduce no one, or several."""
    found = {n for t in texts for n in introduced(t)}
    found = {n for n in found if n in names and n not in question and n not in same_entity}
    return found.pop() if len(found) == 1 else ""


def given_name_lead(
    found: Sequence[Any], top: Any, question: str, shape: Shape, names: Collection[str], same_entity: Collection[str]
) -> str:
    """A who question's short answer (`魏延。`) when the question asks who did something (`是谁闯进来…`, `邀请他的是
    哪位`: a verb phrase after the question word, or a cleft before it) and its best window `top` (a Window of the
    candidates `found`) starts with a given name alone (延脚步急，竟将主灯扑灭): the novel names someone so just after
    naming them in full, and the one full name in the same passage's earlier sentences that ends with it (魏延) is who
    did it. "" when the slot is an object (斩了谁), the window starts with a name or word of two characters (马腾),
    or the full name is not found once, or is whom the question names (`same_entity`: their other names)."""
    if not (_HAN.search(shape.right) or re.search(r"的是[^，,]*$", shape.left)) or not _HAN.match(top.text):
        return ""
    given = top.text[0]
    if any(n.startswith(top.text[:2]) for n in names):
        return ""
    before = "".join(w.text for w in found if w.passage == top.passage and w.end <= top.start and w.end - w.start == 1)
    full = {n for n in names if 2 <= len(n) <= 3 and n[len(surname(n)):] == given and n in before}
    full = {n for n in full if n not in question and n not in same_entity}
    return f"{full.pop()}。" if len(full) == 1 else ""
