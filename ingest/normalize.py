"""Text as search compares it: one script (OpenCC), NFKC widths, numerals as numbers, and names typed in pinyin.

Only matching sees these forms (the keyword index, the query, the dense query): answers and citations quote the
document's own text.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from .headings import cn_to_int

Script = Literal["simplified", "traditional"]
CN_NUMBER = re.compile(r"[零〇一二两三四五六七八九十百千万]+")
_LATIN_WORD = re.compile(r"[A-Za-zÜüǖǘǚǜ]+(?:['’-][A-Za-zÜüǖǘǚǜ]+)*")
_HAN_ONLY = re.compile(r"[\u4e00-\u9fff]+")
_POSSESSIVE = re.compile(r"['’]s$", re.I)
# English words that are also pinyin syllables and too common to start or join a name ("he", "an")
_ENGLISH_SYLLABLES = {"a", "an", "he", "me", "she", "e", "o", "ou", "can", "man", "ran", "men", "ban", "pan", "fan"}
MAX_NAME_WORDS = 4
# A measure word older texts write with another character than a modern question (十万枝箭 for 十万支箭; OpenCC
# keeps both, as both are standard): a query token holding one is searched in either writing (keyword.keyword_query).
# Only the query is expanded: the index keeps the text's own characters.
MEASURE_VARIANTS = str.maketrans({"支": "枝", "枝": "支"})


def measure_variant(token: str) -> str:
    """`token` in the other writing of its measure words (支箭 -> 枝箭, 万枝 -> 万支); the token itself when it has
    none."""
    return token.translate(MEASURE_VARIANTS)


@functools.cache
def _converter(config: str) -> Any:
    import opencc

    return opencc.OpenCC(config)


def to_simplified(text: str) -> str:
    """Traditional characters and phrases as simplified (OpenCC t2s); simplified text comes back unchanged."""
    return _converter("t2s").convert(text) if text else text


def to_traditional(text: str) -> str:
    """Simplified characters and phrases as traditional (OpenCC s2t)."""
    return _converter("s2t").convert(text) if text else text


def fold(text: str) -> str:
    """The form keyword matching compares: NFKC (full-width letters and digits as ASCII), simplified script,
    〇 as 零. Length may change (NFKC), so offsets into the folded text are not offsets into `text`."""
    return to_simplified(unicodedata.normalize("NFKC", text)).replace("〇", "零")


def normalise_numbers(text: str) -> str:
    """Write Chinese numerals as digits so "八十万" and "800000" compare equal (applied to both sides)."""

    def repl(m: re.Match[str]) -> str:
        value = cn_to_int(m.group(0))
        return str(value) if value is not None else m.group(0)

    return CN_NUMBER.sub(repl, text)


def number_tokens(text: str) -> list[str]:
    """The value of each Chinese numeral run as digits ("三千" -> "3000"), so that it matches the same number
    written in Arabic digits (which a tokenizer keeps as they are)."""
    out = []
    for m in CN_NUMBER.finditer(text):
        value = cn_to_int(m.group(0))
        if value is not None:
            out.append(str(value))
    return out


def script_of(texts: Iterable[str]) -> Script:
    """The dominant script of some Chinese text: "traditional" when more of its characters change under t2s than
    under s2t (characters common to both scripts change under neither)."""
    sample = "".join(_HAN_ONLY.findall("".join(texts)))
    if not sample:
        return "simplified"
    as_simplified = to_simplified(sample)
    as_traditional = to_traditional(sample)
    trad = sum(a != b for a, b in zip(sample, as_simplified, strict=False))
    simp = sum(a != b for a, b in zip(sample, as_traditional, strict=False))
    return "traditional" if trad > simp else "simplified"


def in_script(text: str, script: Script) -> str:
    """The text written in `script` (what a dense query should look like for a corpus in that script)."""
    text = unicodedata.normalize("NFKC", text)
    return to_traditional(text) if script == "traditional" else to_simplified(text)


def pinyin_key(name: str) -> str | None:
    """A Chinese name's toneless pinyin, syllables joined, ü written u as English spellings do ("诸葛亮" ->
    "zhugeliang", "吕布" -> "lubu"); None for a name that is not all Chinese characters or has fewer than two."""
    if len(name) < 2 or not _HAN_ONLY.fullmatch(name):
        return None
    from pypinyin import lazy_pinyin

    return "".join(lazy_pinyin(name)).replace("v", "u")  # pypinyin writes ü as v; no other syllable has a v


def _plain(word: str) -> str:
    """A Latin word as a pinyin key compares it: lower case, no apostrophe or hyphen, ü (and v) as u."""
    word = word.lower().replace("'", "").replace("’", "").replace("-", "")
    return re.sub("[üǖǘǚǜv]", "u", word)


class PinyinNames:
    """Names of a corpus reachable by their pinyin: `Liu Bei`, `liubei` and `LIU BEI` find 刘备. When names share
    a spelling (two people read "zhangfei"), the one listed first (the most frequent in the corpus) wins."""

    def __init__(self, names: Sequence[str] = ()) -> None:
        self._by_key: dict[str, str] = {}
        for n in names:
            key = pinyin_key(n)
            if key and key not in self._by_key:
                self._by_key[key] = n

    def __len__(self) -> int:
        return len(self._by_key)

    def find(self, text: str) -> list[str]:
        """The Chinese names that runs of 1-4 Latin words of the text spell, in order, without repeats."""
        return self.scan(text)[0]

    def scan(self, text: str) -> tuple[list[str], list[str]]:
        """`find`'s names, and the text's other Latin words (lower case, as _plain writes them), in order."""
        text = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", text))  # tone marks apart: Lǚ Bù = Lu Bu
        found = _LATIN_WORD.findall("".join(c for c in text if unicodedata.category(c) != "Mn"))
        words = [_plain(_POSSESSIVE.sub("", w)) for w in found]  # Liu Bei's: Liu Bei
        out: list[str] = []
        rest: list[str] = []
        i = 0
        while i < len(words):
            for size in range(min(MAX_NAME_WORDS, len(words) - i), 0, -1):
                span = words[i : i + size]
                if span[0] in _ENGLISH_SYLLABLES or span[-1] in _ENGLISH_SYLLABLES:
                    continue
                name = self._by_key.get("".join(span))
                if name is not None:
                    if name not in out:
                        out.append(name)
                    i += size
                    break
            else:
                rest.append(words[i])
                i += 1
        return out, rest
