"""Find the quoted speech in Chinese prose and who says it (`X曰：“…”`, `X笑谓Y曰`, `…，乃曰：“…”`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

OPEN, CLOSE = "“", "”"
# Where a clause ends. 、 is left out on purpose: in 孔明、许靖奏曰 both names are the subject.
_CLAUSE_END = set("，,。！？!?；;：:”’」』\n…")
_SENTENCE_END = set("。！？!?\n”")
# Narrative openers that come before the subject of a clause (却说孔明…, 次日孔明…, 只见孔明…).
_OPENERS = re.compile(
    r"^(?:却说|且说|话说|再说|又说|却|次日|当日|当夜|是日|是夜|当下|当时|此时|其时|于是|因此|忽然|忽|只见|但见"
    r"|原来|不想|不期|谁知|早有|正|时)+"
)
# A clause that opens with one of these has no subject of its own (乃曰, 笑谓鲁肃曰, 翻身问童子曰): the
# speaker is the subject of an earlier clause. Kept to words no 三国 name starts with, so that 先主曰 or
# 向宠曰 are never mistaken for a subject-less clause (a miss costs a pair; a mistake costs a wrong speaker).
_SUBJECTLESS = re.compile(
    r"^(?:乃|遂|便|因|又|复|亦|即|急|忙|连忙|慌忙|正色|大?笑|冷笑|哑然|问|答|叹|长叹|谓|对|告|嘱|曰|吟|口|翻身"
    r"|执|佯|回顾|回头|顾谓|顾左右|指|大喜|大惊|大怒|大?喝|大?叫|厉声|高声|低声|仰面|仰天|拍手|抚掌|拜|再拜|哭|泣|涕泣"
    r"|垂泪|挥泪|唤|点头|摇头|低头|变色|作色|欣然|徐徐|起身|离席|言|道$|云$|奏|谏|劝|喜|惊|怒|骂|自|再|且|但"
    r"|然后|随即?|当即|良久|半晌|沉吟|暗|密|附耳|私|与|请|传令|分付|下令|教|命|谢曰|皆|俱|齐声|遥|望见|看|听|闻"
    r"|见|入|出|上前|向前|近前|始|亲)"
)
# 答曰 right after a question is the one asked answering (关公问曰：“…”答曰：“…”), named in the question's tag.
_ANSWER = re.compile(r"^(?:答|对曰|应曰|回答)")
ADDRESSEE = re.compile(r"(?:谓|问|告|嘱|叱|责|唤)([^，,。；：曰问而笑叹]{1,6})[^，,。；：]{0,3}曰$")
VERSE = re.compile(r"有[^，。]{0,8}诗|诗曰|赞曰|歌曰|词曰")  # 又有诗曰 after a speech is the narrator's verse
_LOOKBACK = 60  # an intro clause longer than this is narration, not a speaker tag


@dataclass(frozen=True)
class Quote:
    """A top-level quotation: `open` is the index of “, `end` the index after ” (or the paragraph end when it
    is never closed); `text` is what is inside, nested ‘’ and “” kept."""

    open: int
    end: int
    text: str


@dataclass
class Utterance:
    """Speech introduced by a speaker tag. `start` is where the clause naming the speaker begins (the
    narration before it is what prompted the speech); `subject` is that clause without openers."""

    start: int
    colon: int
    quote: Quote
    subject: str
    intro: str
    inherited: bool = False  # the speaker is the previous utterance's (又曰 right after its closing quote)
    alias: str | None = None  # set when the speaker is the character
    text: str = ""

    @property
    def end(self) -> int:
        return self.quote.end


def find_quotes(text: str) -> list[Quote]:
    """Top-level “…” spans. A quote left open at a paragraph end continues when the next paragraph opens
    with “ (the convention for speeches of several paragraphs) and otherwise ends with the paragraph."""
    quotes: list[Quote] = []
    i, n = 0, len(text)
    while (o := text.find(OPEN, i)) >= 0:
        depth, j, seg = 0, o, o + 1
        parts: list[str] = []
        while j < n:
            ch = text[j]
            if ch == OPEN:
                depth += 1
            elif ch == CLOSE:
                depth -= 1
                if depth == 0:
                    break
            elif ch == "\n":
                if not text.startswith(OPEN, j + 1):
                    break
                parts.append(text[seg : j + 1])
                j += 1  # the “ that reopens the continued speech is not part of it
                seg = j + 1
            j += 1
        closed = j < n and text[j] == CLOSE
        parts.append(text[seg:j])
        quotes.append(Quote(o, j + 1 if closed else j, "".join(parts)))
        i = j + 1 if closed else max(j, o + 1)
    return quotes


def _clause_start(text: str, end: int, floor: int) -> int:
    i = end - 1
    while i >= floor and text[i] not in _CLAUSE_END:
        i -= 1
    return i + 1


def strip_openers(clause: str) -> str:
    return _OPENERS.sub("", clause.strip())


def speaker_of(text: str, colon: int, floor: int) -> tuple[int, str, bool] | None:
    """(start, subject clause, subject-less) for the speech tag ending at `colon`, walking back over clauses
    with no subject of their own (孔明见其意甚诚，乃曰) but never past a sentence end or `floor`."""
    end = colon
    while True:
        lo = max(floor, end - _LOOKBACK)
        start = _clause_start(text, end, lo)
        if start == lo and lo > floor and text[lo - 1] not in _CLAUSE_END:
            if end == colon:
                return None  # no clause boundary near: narration, not a speaker tag
            return end + 1, "", True
        subject = strip_openers(text[start:end])
        if subject and not _SUBJECTLESS.match(subject):
            return start, subject, False
        if end == colon and _ANSWER.match(subject):
            return start, subject, True  # 孔明唤入问之，答曰: the answer is not the asker's
        before = text[start - 1] if start > floor else ""
        if not before or before in _SENTENCE_END:
            return start, subject, True
        end = start - 1


def utterances(text: str) -> list[Utterance]:
    """Every quotation in `text` introduced by a speaker tag (`…：“`, `…曰“`), in order."""
    out: list[Utterance] = []
    floor = 0
    for q in find_quotes(text):
        colon = q.open - 1
        if colon < 0 or text[colon] not in "：:曰":
            floor = q.end
            continue
        if text[colon] == "曰":
            colon += 1  # keep 曰 in the clause
        found = speaker_of(text, colon, floor)
        if found is None:
            floor = q.end
            continue
        start, subject, subjectless = found
        prev = out[-1] if out else None
        inherited = subjectless and prev is not None and prev.end == start and not VERSE.search(text[start:colon])
        if inherited and prev and _ANSWER.match(subject):
            addressee = ADDRESSEE.search(prev.intro)
            subject, inherited = (addressee.group(1) if addressee else ""), False
        out.append(Utterance(start, colon, q, subject, text[start:colon], inherited, text=q.text.strip()))
        floor = q.end
    return out


def named_alias(subject: str, aliases: list[str]) -> str | None:
    """The alias the clause opens with, longest first (诸葛亮 before 亮)."""
    for alias in sorted(aliases, key=len, reverse=True):
        if subject.startswith(alias):
            return alias
    return None
