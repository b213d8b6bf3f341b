"""What a knowledge base knows of names (the people and places mined at ingest, the alias groups) and the one script
(simplified) in which questions, names and passages are compared."""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class Lexicon:
    """What the knowledge base knows of names: the people and places mined at ingest, and the alias groups
    (孔明 = 诸葛亮)."""

    names: Collection[str] = frozenset()
    aliases: Sequence[Collection[str]] = ()
    spelled: Callable[[str], list[str]] | None = None  # the names a text spells in pinyin (Liu Bei's -> 刘备)
    relatives: Callable[[str], list[str]] | None = None  # the kin a question asks after, by name (曹操的父亲 -> 曹嵩)

    def same_entity(self, question: str) -> set[str]:
        """Every name of each entity the question names (so that a who-answer is not the question's own subject)."""
        return set().union(*self.entities_in(question))

    def entities_in(self, question: str) -> list[set[str]]:
        """The entities the question names, each as the set of its names (the name, and its alias group, each also
        in simplified script): the longest known names first, a name inside one already found (关羽 in 关羽之子) not
        counted again. Question and names are compared in simplified script (OpenCC, when installed), so either
        script finds the other's names."""
        question = simplified(question)
        known = [n for n in self.names if len(n) >= 2 and simple_name(n) in question]
        known += [n for group in self.aliases for n in group if len(n) >= 2 and simple_name(n) in question]
        out: list[set[str]] = []
        for name in sorted(set(known), key=len, reverse=True):
            if any(simple_name(name) in m for group in out for m in group if m in question):
                continue
            group = {name}
            for aliases in self.aliases:
                if name in aliases:
                    group |= set(aliases)
            out.append(group | {simple_name(n) for n in group})
        return out


@functools.lru_cache(maxsize=1 << 16)
def simple_name(name: str) -> str:
    return simplified(name)


def simplified(text: str) -> str:
    """`text` in simplified script (OpenCC t2s); unchanged when OpenCC is not installed."""
    try:
        converter = _t2s()
    except ImportError:
        return text
    return str(converter.convert(text))


@functools.cache
def _t2s() -> Any:
    import opencc  # type: ignore[import-untyped, unused-ignore]

    return opencc.OpenCC("t2s")


def lexicon_of(retriever: Any) -> Lexicon:
    """The names a retriever knows (ingest.retrieval.Retriever: mined entities, the alias table, their pinyin, the
    kin its documents state)."""
    return Lexicon(retriever.entities, retriever.aliases.groups, retriever.pinyin.find, retriever.kin_names)
