"""The offline answer: the sentences of the retrieved passages that answer the question, led by the answer itself, or
a decline when the passages are no evidence for it (decline_reason) or cannot fill its slot."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from ingest.aliases import HONORIFIC, surname
from ingest.chunking import split_sentences
from ingest.events import event_words
from ingest.retrieval import RetrievedChunk

from .carried import anothers_filler, carried_over
from .decline import FUNCTION_CHARS, HAN_CHAR, Terms, coverage, decline_message, decline_reason
from .decline import MIN_COVERAGE as MIN_COVERAGE
from .decline import MIN_DENSE as MIN_DENSE
from .decline import MIN_DENSE_NAMED as MIN_DENSE_NAMED
from .decline import NO_ANSWER as NO_ANSWER
from .decline import NO_ANSWER_EN as NO_ANSWER_EN
from .decline import relevant as relevant
from .lexicon import Lexicon as Lexicon
from .lexicon import lexicon_of as lexicon_of
from .lexicon import simplified
from .question import (
    BIRTH_CHARS,
    PLACE_SUFFIX,
    Shape,
    asks_birth,
    fits_unit,
    kin_of,
    liked_of,
    question_shape,
    role_of,
    says_liked,
    slot_candidates,
)
from .span import aligned_filler, clause_span, context_terms, given_name_lead, introduced_lead, shares_sentence

MAX_ANSWER_CHARS = 200

# Question kinds declined when no candidate sentence offers a filler of the kind (a numeral, a date; of the unit the
# question asks for: UNITS) in a sentence that names whom the question asks about: their answer cannot be a
# paraphrase. A who / where question may be answered by a pronoun or a name the miner missed (but a kin's name,
# "X的妻子叫什么", must stand beside the kin: question.kin_of).
FILLED_KINDS = ("number", "when")
# Kinds whose slot takes a typed filler (what: a word ending in its head noun, 什么阵 -> 八卦阵); HEAD_CHARS of the
# question after 什么 / 哪匹 are the head.
TYPED_KINDS = ("who", "where", "number", "when", "what")
HEAD_CHARS = 2
# Kinds whose lead is the filler itself; a what-filler (a guess at a word's start, unsegmented) only ranks windows,
# its lead is the clause that lines up with the question (clause_span).
SPAN_KINDS = ("who", "where", "number", "when")


@dataclass
class Weights:
    """How a candidate window is scored (fitted on the tuning half of the dev set; BENCHMARKS.md)."""

    coverage: float = 0.5  # IDF-weighted share of the question's terms in the window
    slot: float = 0.3  # the window holds a filler of the question's kind (a name for who, a numeral for how many)
    context: float = 0.3  # share of the question's words around its slot (left / right of 谁, 什么…) in the window
    chars: float = 1.0  # IDF-weighted share of the question's characters in the window (IDF over the candidates)
    rank: float = 0.1  # per place of the passage in the retrieval order
    length: float = 0.0  # per character of the window
    second: float = 0.3  # another window is added when its score is at least this share of the first's
    windows: int = 3  # at most this many windows
    budget: int = 150  # and at most this many characters in all (the answer, its lead and its markers)
    lead_pool: int = 3  # the lead's filler is looked for in this many of the best windows (lead_filler)
    lead_rank: float = 2.0  # characters of distance a filler may give up per place further down the ranking
    # a short answer (the filler or a clause) before the sentences: off, as it is mostly wrong (right for 22 of 106
    # tuning questions) and read first; without it as many answers hold a keyword (BENCHMARKS.md). Extract.span has it
    lead: bool = False


DEFAULT_WEIGHTS = Weights()


@dataclass
class Window:
    passage: int  # 1-based index of the passage
    start: int  # first sentence index
    end: int  # one past the last sentence index
    text: str
    score: float = 0.0
    parts: dict[str, float] = field(default_factory=dict)
    # one sentence, or two that a semicolon joins (坚体中石、箭，…死于岘山之内；寿止三十七岁。): what a filler must
    # share with whom the question asks about
    one_sentence: bool = True


@dataclass
class Extract:
    text: str
    used: list[int]  # indexes (1-based) of the passages cited, as the text cites them: it marks used[i] as [i + 1]
    confidence: float
    span: str = ""
    kind: str = ""
    reason: str = ""  # why it declined (decline_reason), "" for an answer


# a sentence of a document in a Latin script ends at a full stop before a capital (split_sentences ends Chinese ones)
_LATIN_END = re.compile(r"(?<=[a-z0-9\"')\]][.])\s+(?=[A-Z\"'])")
_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")


def windows(hits: Sequence[RetrievedChunk], max_chars: int = 110) -> list[Window]:
    """Candidate answers: each sentence of each passage (of three Chinese characters or three Latin words at
    least), and each pair of neighbouring sentences that fits `max_chars`."""
    out: list[Window] = []
    for n, h in enumerate(hits, start=1):
        sents = [p.strip() for a, b in split_sentences(h.text) for p in _LATIN_END.split(h.text[a:b])]
        sents = [s for s in sents if len(HAN_CHAR.findall(s)) >= 3 or len(_LATIN_WORD.findall(s)) >= 3]
        for i, s in enumerate(sents):
            out.append(Window(n, i, i + 1, s))
            if i + 1 < len(sents) and len(s) + len(sents[i + 1]) <= max_chars:
                out.append(Window(n, i, i + 2, s + sents[i + 1], one_sentence=s.endswith(("；", ";"))))
    return out


def char_idf(question: str, texts: Sequence[str]) -> dict[str, float]:
    """The question's content characters, each weighted by its IDF among `texts` (the candidate sentences): a
    modern question and a classical sentence share characters (酒, 斩) more often than words."""
    chars = {c for c in HAN_CHAR.findall(question) if c not in FUNCTION_CHARS}
    n = len(texts)
    out = {}
    for c in chars:
        df = sum(c in t for t in texts)
        if df:
            out[c] = float(np.log((n + 1) / (df + 0.5)))
    return out


def fillers(shape: Shape, text: str, question: str, names: Collection[str]) -> list[tuple[int, int]]:
    """Spans of `text` that could fill the question's slot and are not already in the question (for what, the head
    noun's word without the question's own characters before it: 天子宝雕弓 -> 宝雕弓)."""
    head = "".join(c for c in HAN_CHAR.findall(shape.right)[:HEAD_CHARS] if c not in FUNCTION_CHARS)
    birth = shape.kind == "when" and asks_birth(question)
    out = []
    for a, b in slot_candidates(shape.kind, text, names, head if shape.kind == "what" else ""):
        if shape.kind == "who" and text[b - 1] in PLACE_SUFFIX:
            continue  # a mined "name" that is a place (成都, 冀州) answers no who
        if not fits_unit(shape.wh, text[a:b]):
            continue  # 哪一年 asks for a year (当夜 cannot fill it), 多重 for a weight (三十合 cannot)
        if birth and not any(c in BIRTH_CHARS for c in text[max(0, a - KIN_REACH) : b + KIN_REACH]):
            continue  # a birthday is told beside 生 / 诞: 次日 of a visit is none
        if shape.kind == "what":
            while b - a > 1 and text[a] in question:
                a += 1
            if b - a < 2:
                continue
        if text[a:b] not in question:
            out.append((a, b))
    return out


def window_parts(
    question: str, found: list[Window], terms: Terms, names: Collection[str], lexicon: Lexicon | None = None
) -> None:
    """Set each window's evidence (`parts`): the question's terms, characters and slot words it holds, whether it
    offers a filler of the slot's kind, and whether it names whom the question asks about (by the `lexicon`; 1.0
    when no candidate names them)."""
    plain = simplified(question)  # the question's kind and what it asks after, read in simplified script
    shape = question_shape(plain)
    near = context_terms(shape)
    typed = shape.kind in TYPED_KINDS
    char_weight = char_idf(question, [win.text for win in found])
    char_total = sum(char_weight.values()) or 1.0
    every = "\n".join(win.text for win in found if win.end - win.start == 1)
    names = {n for n in names if n in every}  # once, not for each window (thousands of mined names)
    # the names of whom the question asks about that the candidates use ("entity": the window names one of them)
    kin, liked, role = kin_of(shape), liked_of(plain), role_of(plain)
    stated = lexicon.relatives(plain) if kin and lexicon is not None and lexicon.relatives else []
    groups = asked_about(shape, lexicon)
    present = {n for group in groups for n in group if n in every}
    short = {g for group in groups for g in _given_names(group)}
    full_in = {win.passage for win in found if any(n in win.text for n in present)}
    for win in found:
        named = any(n in win.text for n in present) or (
            win.passage in full_in and any(g in win.text for g in short))
        win.parts = {
            "coverage": coverage(win.text, terms),
            "chars": sum(v for c, v in char_weight.items() if c in win.text) / char_total,
            "context": sum(t in win.text for t in near) / len(near) if near else 0.0,
            "slot": 1.0 if typed and fillers(shape, win.text, question, names) else 0.0,
            "entity": 1.0 if not present or named else 0.0,
        }
        if kin:  # a sentence names the kin beside whom the question asks about, or the kin the documents state
            whose = present | short if win.passage in full_in else present
            kin_named = win.parts["entity"] and _kin_named(win.text, kin, shape, question, names, whose)
            win.parts["kin"] = 1.0 if kin_named or any(r in win.text for r in stated) else 0.0
        if liked:
            win.parts["likes"] = 1.0 if win.parts["entity"] and says_liked(simplified(win.text), liked) else 0.0
        if role:
            win.parts["role"] = 1.0 if win.parts["entity"] and _role_named(win.text, role, names - present) else 0.0
    if shape.kind in FILLED_KINDS and present and event_words(plain):  # 气绝而死。寿六十六岁。: the age is theirs
        carried_over(found, full_in, names | short, present | short)


def _given_names(group: Collection[str]) -> set[str]:
    """The given name alone of one person's names (坚 of 孙坚, 亮 of 诸葛亮, 惇 of 夏侯惇): the novel calls someone it
    has just named so (坚…年三十七岁). A name gives one when it is its group's only name, starts with a compound
    surname, or shares its surname with the group's surname + courtesy name (刘备 beside 刘玄德); courtesy names (玄德,
    元让), honorifics (关公) and places (成都) give none."""
    out = set()
    for n in group:
        if len(n) not in (2, 3) or n[-1] in PLACE_SUFFIX + HONORIFIC:
            continue
        family = surname(n)
        styled = any(o != n and len(o) == len(family) + 2 and o.startswith(family) for o in group)
        if len(group) == 1 or len(family) == 2 or styled:  # a compound surname
            out.add(n[len(family):])
    return {g for g in out if g and not set(g) & FUNCTION_CHARS}


def asked_about(shape: Shape, lexicon: Lexicon | None) -> list[set[str]]:
    """Whom a question asks about: the entities its slot's clause names, not those of the clauses before it
    (陆逊火烧刘备连营，蜀军营寨绵延了多少里: the clause asks about 蜀军, so a filler need not stand beside 陆逊
    or 刘备)."""
    if lexicon is None:
        return []
    return lexicon.entities_in(shape.left + shape.wh + shape.right)


KIN_REACH = 3  # characters between a kin character and the name it gives (妻张氏, 母何氏, 长子司马师)


def _role_named(text: str, role: str, names: Collection[str]) -> bool:
    """Whether `text` names someone within KIN_REACH characters of `role` (师事郑玄, 拜司马徽为师; 匠): a teacher or
    a maker the question asks about; `names` leaves out whom the question asks about. A `role` character inside a
    name (司马师) is no role word."""
    spots = [m.start() for m in re.finditer(role, text)]
    if not spots:  # most windows: no name need be looked for
        return False
    found = [(m.start(), m.end()) for n in names for m in re.finditer(re.escape(n), text)]
    spots = [i for i in spots if not any(a <= i < b for a, b in found)]
    return any(abs(a - i) <= KIN_REACH + b - a for a, b in found for i in spots)


def _kin_named(
    text: str, kin: str, shape: Shape, question: str, names: Collection[str], whose: Collection[str]
) -> bool:
    """Whether `text` names someone's kin (a `kin` character right after one of `whose` names or 其: 玄德之母, 懿妻,
    其父) and gives a name (a who-filler) starting within KIN_REACH characters after it: the novel names a kin after
    the kin word (懿妻张氏, 其母何氏, 长子司马师, or 名 and a given name: 其父名珪); a name before it is someone else
    (曹操囚其母: who held her)."""
    ends = {m.end() for n in whose for m in re.finditer(re.escape(n), text)}
    ends |= {m.end() for m in re.finditer("其", text)}
    spots = [i for i, c in enumerate(text) if c in kin and any(i - KIN_REACH <= e <= i for e in ends)]
    full = any(n in text for n in whose if len(n) > 1)  # 字孔明。其父名珪 (庶曰：…其父名珪 is another's father)
    if full and any(text[i + 1 : i + 2] == "名" and HAN_CHAR.match(text[i + 2 : i + 3]) for i in spots):
        return True  # 其父名珪: the given name alone, which no miner takes for a name
    return any(i < a <= i + KIN_REACH for a, _ in fillers(shape, text, question, names) for i in spots)


def rank_windows(found: list[Window], w: Weights) -> list[Window]:
    """The windows (with their parts set), best first, each with its score."""
    for win in found:
        p = win.parts
        win.score = (
            w.coverage * p["coverage"] + w.chars * p["chars"] + w.context * p["context"] + w.slot * p["slot"]
            - w.rank * (win.passage - 1) - w.length * len(win.text)
        )
    return sorted(found, key=lambda x: (-x.score, -len(x.text)))  # on a tie, the window with more support


def choose(ranked: list[Window], w: Weights, budget: int) -> list[Window]:
    """The best window, then the next ones that do not overlap those chosen, score at least `w.second` of the best
    and fit the budget (characters), up to `w.windows`: the best first (an answer starts with what answers), the
    others after it in reading order."""
    chosen = ranked[:1]
    for win in ranked[1:]:
        if len(chosen) >= w.windows or win.score < w.second * chosen[0].score:
            break
        if sum(len(c.text) + 3 for c in chosen) + len(win.text) > budget:
            continue
        if any(c.passage == win.passage and win.start < c.end and c.start < win.end for c in chosen):
            continue
        if any(shares_sentence(win.text, c.text) for c in chosen):  # the same sentence in two passages (overlap)
            continue
        chosen.append(win)
    return [chosen[0], *sorted(chosen[1:], key=lambda c: (c.passage, c.start))]


def extractive_answer(
    question: str, hits: Sequence[RetrievedChunk], terms: Terms, lexicon: Lexicon | None = None,
    weights: Weights = DEFAULT_WEIGHTS, max_chars: int = MAX_ANSWER_CHARS, said: str = "",
) -> Extract:
    """`{sentence}[1]{sentence}[2]`: up to `weights.windows` windows (a sentence or two each, `weights.budget`
    characters in all) of the passages that answer, the best first, each marked with its passage's place in
    `Extract.used` (the passages cited, numbered from 1), after a short answer when `weights.lead`; or the decline,
    in the question's language, when the passages are no evidence (`decline_reason`, kept in `Extract.reason`) or
    no sentence offers a filler for a number / date question (FILLED_KINDS). Sentences the conversation's last
    answer (`said`) quoted are left out while others remain."""
    lexicon = lexicon or Lexicon()
    reason = decline_reason(question, hits, terms, lexicon)
    if reason:
        return Extract(decline_message(question), [], 0.0, kind="declined", reason=reason)
    found = windows(hits)
    found = [w for w in found if not shares_sentence(w.text, said)] or found  # a follow-up hears something new
    window_parts(question, found, terms, lexicon.names, lexicon)
    return compose(question, found, lexicon, weights, max_chars)


def lead_filler(
    ranked: list[Window], question: str, shape: Shape, lexicon: Lexicon, weights: Weights
) -> tuple[Window, str | None]:
    """The window the short answer comes from and its filler: among the best `weights.lead_pool` windows, the
    filler that lines up best with the question's words around the slot (aligned_filler's distance), less
    `weights.lead_rank` per place in the ranking; the best window and None when none offers a filler."""
    same = lexicon.same_entity(question)
    choice: tuple[float, Window, str] | None = None
    for place, win in enumerate(ranked[: max(1, weights.lead_pool)]):
        found = aligned_filler(win.text, fillers(shape, win.text, question, lexicon.names), question, shape, same)
        if found is None:
            continue
        score = min(found[0], LEAD_FAR) + weights.lead_rank * place
        if choice is None or score < choice[0]:
            choice = (score, win, found[1])
    return (choice[1], choice[2]) if choice else (ranked[0], None)


LEAD_FAR = 12  # a filler further than this from the question's words is as far as any


# What a question asking after a kin's name, a teacher or maker, or a liking needs of some window, and the decline's
# reason when none has it.
NAMED_PARTS = {
    "kin": "no sentence names the kin the question asks about beside whom it asks about",
    "role": "no sentence about whom the question asks names a teacher or maker",
    "likes": "no sentence about whom the question asks says they like or are good at what it asks",
}


def _stated_kin(question: str, found: list[Window], lexicon: Lexicon) -> list[str]:
    """For a question asking after a kin (window_parts set a "kin" part), the relatives the documents state
    (Lexicon.relatives) that a candidate window names: 曹嵩 for 曹操的父亲叫什么 (操父曹嵩)."""
    if not found or "kin" not in found[0].parts or lexicon.relatives is None:
        return []
    return [r for r in lexicon.relatives(simplified(question)) if any(r in w.text for w in found if w.parts["kin"])]


def compose(question: str, found: list[Window], lexicon: Lexicon, weights: Weights, max_chars: int) -> Extract:
    """The answer from candidate windows whose evidence is set (window_parts): see extractive_answer."""
    decline = Extract(decline_message(question), [], 0.0, kind="declined", reason="no sentence to answer from")
    if not found:
        return decline
    shape = question_shape(simplified(question))
    # window_parts set a kin / role / likes part on every window exactly when the question asks after one
    for part, reason in NAMED_PARTS.items():
        if part in found[0].parts and not any(win.parts[part] for win in found):
            decline.reason = reason
            return decline
    # the filler must stand beside whom the question asks about (in one sentence): 曹操 + a year for 曹操 的生年
    filled = [win for win in found if win.parts.get("slot") and win.parts.get("entity", 1.0)]
    if "died" in found[0].parts:  # an age or date at a death: told there, beside them (睿年至十五岁 is none)
        filled = [win for win in filled if win.one_sentence and win.parts["died"]]
    if shape.kind in FILLED_KINDS and not any(win.one_sentence for win in filled):
        decline.reason = f"no passage offers a filler for a {shape.kind} question beside whom it asks about"
        return decline
    ranked = rank_windows(found, weights)
    if shape.kind in FILLED_KINDS:  # and the answer starts with the best window that offers one
        first = max(filled, key=lambda w: w.score)  # and no one else's number or date follows it
        ranked = [first, *(w for w in ranked if w is not first and not anothers_filler(w))]
    best, first = ranked[0].score, ranked[0]
    top, span = first, None
    if shape.kind in SPAN_KINDS:  # a number or date lead comes from a window that offers it beside them
        offers = {id(w) for w in filled}  # (by identity: a Window compares by value, field by field)
        pool = [w for w in ranked if id(w) in offers] if shape.kind in FILLED_KINDS else ranked
        top, span = lead_filler(pool, question, shape, lexicon, weights)
        if shape.kind in FILLED_KINDS and top.parts.get("died"):  # with the death it follows (气绝而死。寿六十六岁。)
            top = next((w for w in found if (w.passage, w.start, w.end) == (top.passage, top.start - 1, top.end)), top)
        if top is not ranked[0]:  # the window the lead comes from is cited first
            ranked = [top, *(w for w in ranked if w is not top)]
    span = span or clause_span(top.text, question, shape)
    # no lead for a question without Chinese characters: its words cannot be aligned with the slot of a sentence
    same = span.strip("。！？") == top.text.strip("。！？") or not HAN_CHAR.search(question) or not weights.lead
    lead = "" if same else f"{span.rstrip('。！？，；：')}。"
    kin = _stated_kin(question, found, lexicon)  # the relative the documents state leads a kin question's answer
    lead = lead or ("、".join(kin) + "。" if kin else "")
    named = ""  # 延脚步急 (the best window) answers 是谁闯进来把主灯扑灭了: 魏延, whom its passage has just named
    if not lead and shape.kind == "who" and "kin" not in top.parts:
        named = given_name_lead(found, first, question, shape, lexicon.names, lexicon.same_entity(question))
    chosen = choose(ranked, weights, min(max_chars, weights.budget) - len(lead or named))
    lead = lead or (named if first in chosen else "")
    if not lead and shape.kind == "who" and "kin" not in top.parts:  # 把关将姓孔，名秀 answers 守将叫什么: 孔秀
        args = (question, lexicon.names, lexicon.same_entity(question))
        intro = introduced_lead([c.text for c in chosen], *args)
        again = choose(ranked, weights, min(max_chars, weights.budget) - len(intro) - 1) if intro else chosen
        if intro and introduced_lead([c.text for c in again], *args) == intro:  # in the room the lead leaves
            chosen, lead = again, f"{intro}。"
    if kin and not any(k in c.text for c in chosen for k in kin):
        lead = ""  # only a relative the quoted sentences name
    used = list(dict.fromkeys(c.passage for c in chosen))  # marked [1], [2]… as cited (not the passages' ranks)
    marked = [f"{c.text}[{used.index(c.passage) + 1}]" for c in chosen]  # then a space before a Latin sentence
    body = "".join((" " if i and re.match(r"[A-Za-z\"']", m) else "") + m for i, m in enumerate(marked))
    return Extract(lead + body, used, best, span=span, kind=shape.kind)
