"""Name aliases (孔明 = 诸葛亮 = 卧龙): a table a user supplies, plus groups mined from the corpus itself."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

_HAN = "\u4e00-\u9fff"
# a courtesy name changed later (姓关名羽，字长生，后改云长 / 改字 / 更字): both name the person
_CHANGED = rf"(?:[，,]?(?:后|又|遂)?(?:改字|更字|改)([{_HAN}]{{2}})(?=[，。；,;：:]))?"
# 姓刘名备，字玄德 / 覆姓诸葛，名亮，字孔明 / 姓赵，名云，字子龙
_FULL = re.compile(rf"(?:复|覆)?姓([{_HAN}]{{1,2}})[，,]?名([{_HAN}]{{1,2}})[，,]?字([{_HAN}]{{2}}){_CHANGED}")
# 庞统字士元 / 此人乃颍川徐庶，字元直 / 亮字孔明 (name resolved against how often it occurs)
_SHORT = re.compile(rf"([{_HAN}]{{1,4}})[，,]?字([{_HAN}]{{2}}){_CHANGED}(?=[，。；,;：:])")
_NOT_NAME = set("此其乃名即又亦曰者之也为")
# a given name changed later (逊本名陆议，后改名逊，字伯言): the courtesy name goes with the new name
_RENAMED = re.compile(rf"本名([{_HAN}]{{2,3}})[，,]?(?:后|又|遂)?(?:改名|更名)([{_HAN}]{{1,2}})[，,]?字([{_HAN}]{{2}})")
# an honorific of the surname (关公): kept when this share of its uses have another of the person's names within
# HONORIFIC_REACH characters (关公 0.41; 周公, the Duke of Zhou, 0 beside 周瑜's names; 马公, 魏公 0)
HONORIFIC = "公"
HONORIFIC_NEAR = 0.2
HONORIFIC_REACH = 150
# characters that make a "name" before 字 a phrase instead ("一字摆开", "年二十四，字正平")
_NOT_IN_NAME = set("一二三四五六七八九十百千万无不并手年岁")
COMPOUND_SURNAMES = set(
    "诸葛 司马 夏侯 欧阳 公孙 皇甫 令狐 上官 东方 慕容 太史 尉迟 淳于 长孙 宇文 司徒 钟离 轩辕 独孤 南宫".split()
)


def surname(name: str) -> str:
    """The surname of a full name: 诸葛 of 诸葛瞻, 曹 of 曹嵩 (a compound surname alone is no full name)."""
    return name[:2] if name[:2] in COMPOUND_SURNAMES and len(name) > 2 else name[:1]


class AliasTable:
    """Groups of names for one entity; any name in a query can be expanded to the others."""

    def __init__(self, groups: Iterable[Iterable[str]] = ()) -> None:
        self._group_of: dict[str, int] = {}
        self._groups: list[set[str]] = []
        for g in groups:
            self.add(g)

    def add(self, names: Iterable[str]) -> None:
        names = {n.strip() for n in names if n and n.strip()}
        if len(names) < 2:
            return
        hit = sorted({self._group_of[n] for n in names if n in self._group_of})
        if hit:
            keep = hit[0]
            for other in hit[1:]:  # merge groups that share a name
                self._groups[keep] |= self._groups[other]
                self._groups[other] = set()
            self._groups[keep] |= names
        else:
            keep = len(self._groups)
            self._groups.append(set(names))
        for n in self._groups[keep]:
            self._group_of[n] = keep

    @property
    def groups(self) -> list[list[str]]:
        return [sorted(g) for g in self._groups if g]

    @property
    def names(self) -> list[str]:
        return sorted(self._group_of, key=len, reverse=True)

    def __len__(self) -> int:
        return len(self.groups)

    def find(self, text: str) -> list[str]:
        """Names of the table that occur in the text, longest first, without overlaps."""
        found: list[str] = []
        covered = [False] * len(text)
        for name in self.names:
            start = text.find(name)
            while start >= 0:
                if not any(covered[start : start + len(name)]):
                    for i in range(start, start + len(name)):
                        covered[i] = True
                    if name not in found:
                        found.append(name)
                start = text.find(name, start + 1)
        return found

    def expansions(self, text: str) -> list[str]:
        """The other names of every entity mentioned in the text."""
        mentioned = self.find(text)
        extra: list[str] = []
        for name in mentioned:
            for other in sorted(self._groups[self._group_of[name]]):
                if other not in mentioned and other not in extra:
                    extra.append(other)
        return extra

    def merged(self, other: AliasTable) -> AliasTable:
        return AliasTable([*self.groups, *other.groups])


def load_alias_file(path: Path) -> AliasTable:
    """One entity per line, names separated by spaces, commas, '=' or '、'; '#' starts a comment."""
    groups = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0]
        names = [n for n in re.split(r"[\s,，=、|/]+", line) if n]
        if len(names) >= 2:
            groups.append(names)
    return AliasTable(groups)


def mine_aliases(text: str, min_count: int = 3) -> list[list[str]]:
    """Name / courtesy-name groups introduced in the text ("姓刘名备，字玄德" -> 刘备, 玄德, 刘玄德; a courtesy name
    changed later, "字长生，后改云长", and a changed given name, "本名陆议，后改名逊，字伯言", count too), with the
    surname's honorific (关公) where it is unambiguous (honorifics)."""
    groups: dict[str, set[str]] = {}
    surnames: dict[str, str] = {}

    def note(surname: str, given: str, *courtesy: str | None) -> None:
        name = surname + given
        if text.count(name) < min_count:
            return
        for zi in courtesy:
            if not zi or _NOT_IN_NAME & set(name + zi) or text.count(zi) < min_count:
                continue
            group = groups.setdefault(name, {name})
            surnames[name] = surname
            group.add(zi)
            if text.count(surname + zi):
                group.add(surname + zi)

    for m in _FULL.finditer(text):
        note(*m.groups())
    for m in _RENAMED.finditer(text):
        old, given, zi = m.groups()
        note(old[:2] if old[:2] in COMPOUND_SURNAMES else old[:1], given, zi)
    for m in _SHORT.finditer(text):
        before, zi, changed = m.groups()
        # the name is the longest tail of `before` that the text also uses often on its own
        for size in (3, 2):
            cand = before[-size:]
            if len(cand) < size or cand[0] in _NOT_NAME or text.count(cand) < min_count * 2:
                continue
            surname_len = 2 if cand[:2] in COMPOUND_SURNAMES else 1
            if size > surname_len:
                note(cand[:surname_len], cand[surname_len:], zi, changed)
                break
    # A courtesy name that two people share (徐晃 and 管辂 are both 公明) names neither reliably.
    owners: dict[str, int] = {}
    for g in groups.values():
        for n in g:
            owners[n] = owners.get(n, 0) + 1
    out = []
    for name, g in groups.items():
        unique = sorted(n for n in g if owners[n] == 1)
        if len(unique) > 1:
            out.append(sorted({*unique, *honorifics(text, unique, surnames[name], groups.values(), min_count)}))
    return out


def honorifics(
    text: str, names: list[str], surname: str, others: Iterable[set[str]], min_count: int = 3
) -> list[str]:
    """The surname's honorific (关 + 公 = 关公) as another name of the person `names` name, when the surname is one
    character, no other mined person has it (曹公: 曹操 or 曹仁?), the honorific is used `min_count` times on its own
    (not as the start of a mined name: 黄公覆 is 黄盖's, 周公瑾 周瑜's), and HONORIFIC_NEAR of those uses have one of
    the person's names within HONORIFIC_REACH characters (周公, the Duke of Zhou, never stands beside 周瑜's)."""
    word = surname + HONORIFIC
    if len(surname) > 1 or text.count(word) < min_count:
        return []  # a family name of two characters is a clan's (司马公: 司马懿, 司马昭 or 司马徽?)
    mined = {n for g in others for n in g}
    rivals = {n for n in mined if n not in names and len(n) > len(surname) and n.startswith(surname)}
    if word in mined or any(not n.startswith(word) for n in rivals):
        return []
    longer = [n for n in mined if n.startswith(word) and n != word]  # 周公瑾 is no use of 周公
    uses = [m.start() for m in re.finditer(word, text) if not any(text.startswith(n, m.start()) for n in longer)]
    if len(uses) < min_count:
        return []
    near = sum(
        any(n in text[max(0, i - HONORIFIC_REACH) : i + HONORIFIC_REACH].replace(word, "") for n in names) for i in uses
    )
    return [word] if near >= HONORIFIC_NEAR * len(uses) else []
