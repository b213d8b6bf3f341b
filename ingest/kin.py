"""Kinship a text states (操父曹嵩, 马腾之子马超, 袁绍长子袁谭, 布妻严氏), mined at ingest time, and the kin a
query asks about (曹操的父亲叫什么？ -> 曹嵩), so that retrieval also searches for the relative by name.

A modern question names a relative by the kin word (父亲, 儿子, 老婆); the novel tells the relative's own name in one
sentence of hundreds about the person (操父曹嵩，本姓夏侯氏), and every later passage about the relative uses that name
only (张闿杀尽曹嵩全家). So a question about someone's father finds neither unless the father's name joins the query.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence

from .aliases import surname
from .normalize import fold

_HAN = "\u4e00-\u9fff"

# Kin words as people say them, each with the novel's characters for the kin: "X的妻子叫什么" asks for a name that
# stands beside 妻 in a sentence about X, or the wife mine_kin found (a relation of one of those characters).
KIN_WORDS = {
    "父亲": "父", "母亲": "母", "妻子": "妻", "夫人": "夫人妻", "丈夫": "夫", "儿子": "子", "长子": "长子",
    "次子": "次子", "女儿": "女", "哥哥": "兄", "兄长": "兄", "弟弟": "弟", "妹妹": "妹", "姐姐": "姊姐",
    "叔父": "叔", "伯父": "伯", "祖父": "祖", "岳父": "岳丈", "老师": "师", "师父": "师", "妻": "妻", "母": "母",
    "父": "父",
    # as people say them (庞统的老婆叫什么): the novel's character is the same
    "老婆": "妻", "媳妇": "妻", "太太": "妻", "老公": "夫", "爸爸": "父", "爸": "父", "爹": "父", "妈妈": "母",
    "妈": "母", "娘": "母", "爷爷": "祖", "孙子": "孙", "孙女": "孙", "女婿": "婿", "舅舅": "舅", "叔叔": "叔",
    "伯伯": "伯", "哥": "兄", "大哥": "兄", "姐": "姊姐", "外婆": "外", "姥姥": "外", "外公": "外", "姥爷": "外",
    "老爹": "父", "老爸": "父", "老妈": "母", "老娘": "母", "孩子": "子女", "儿女": "子女", "养子": "子", "义子": "子",
    "侄子": "侄", "侄儿": "侄",
}  # fmt: skip

# How the text states a relation ("A之R B" / "A R B"), each word with the relation it records: a son by his place
# (长子) is a son too.
_STATED = {"长子": ("子", "长子"), "次子": ("子", "次子"), "三子": ("子",), "幼子": ("子",), "子": ("子",),
           "女": ("女",), "父": ("父",), "母": ("母",), "妻": ("妻",), "兄": ("兄",), "弟": ("弟",), "侄": ("侄",),
           "叔父": ("叔",), "兄子": ("侄",)}  # fmt: skip
# the relation the other way round (A's son B: B's father A); blood kin share a surname
_INVERSE = {"子": "父", "女": "父", "父": "子", "兄": "弟", "弟": "兄", "侄": "叔", "叔": "侄", "妻": "夫"}
_BLOOD = set("子女父兄弟侄叔") | {"长子", "次子"}
# characters that are no given name standing for a person (天子, 公子, 孺子, 其子, 吾弟, 与弟…)
_NOT_GIVEN = set("天公孺其吾汝令与及并之也乃此彼某兄弟父母子女妻长次三四幼太世庶义族宗家舍贤小二于为以使见遣命")
_NOT_PERSON = set("一二三四五六七八九十百千万人")  # 二人, 二叔: the tagger's "names" that count people
_TITLES = ("将军", "丞相", "太守", "刺史", "天子", "皇帝", "主公")  # 袁将军妻刘氏: a title, not whose wife
_WOMEN = ("氏", "夫人", "后", "妃", "姬", "娘", "女")  # how the novel names a woman (伏皇后, 甘夫人, 吴氏)
_SONS = ("长子", "次子", "三子", "幼子")  # a son by his place: the name follows (令长子张苞具棺椁)
_NAME = re.compile(rf"[{_HAN}]{{2,3}}")
REACH = 300  # characters before a given name alone (操父曹嵩) where the person is named in full
# the tagger's "names" that run on into the next word (糜芳守, 邓艾之): no one 其 stands for, no kin of theirs
_NOT_END = set("之守曰道也乃与及等")
PRONOUN_REACH = 80  # characters before 其 (其子马超) where whom it stands for is named


def mine_kin(text: str, names: Collection[str], groups: Sequence[Collection[str]] = ()) -> list[list[str]]:
    """[person, relation, relative] triples the text states, each once, with their inverses: 操父曹嵩 -> [曹操, 父,
    曹嵩] and [曹嵩, 子, 曹操]. The person is a known name (`names`, `groups`: the alias groups) or a given name alone
    whose full name the text used within REACH characters before (操 after 曹操 / 姓曹名操); the relative is a known
    name, or a woman's 严氏 / 糜夫人; blood kin (father, son, brother…) share the person's surname. Hundredths of a
    second for a novel (the relation words are looked up first, names only around them)."""
    people = {n for n in names if 2 <= len(n) <= 4} | {n for g in groups for n in g if len(n) >= 2}
    people = {n for n in people if not set(n) & _NOT_PERSON and not n.endswith(_TITLES)}
    if not people:
        return []
    group_of = {n: set(g) for g in groups for n in g}
    words = re.compile("|".join(sorted(map(re.escape, _STATED), key=len, reverse=True)))
    out: dict[tuple[str, str, str], None] = {}
    last = (-SONS_REACH, "")  # where the last son by his place was named, and his father
    for m in words.finditer(text):
        end = m.start() - (text[m.start() - 1 : m.start()] == "之")
        a = next((text[end - n : end] for n in (4, 3, 2) if text[end - n : end] in people), text[end - 1 : end])
        after = m.end() + (text[m.end() : m.end() + 1] == "名")
        b = next((text[after : after + n] for n in (4, 3, 2) if text[after : after + n] in people), None)
        if b is None and re.match(rf"[{_HAN}](?:氏|夫人)", text[after : after + 3]):
            b = text[after : after + (2 if text[after + 1] == "氏" else 3)]
        if b is None and after == m.end() and m.group(0) in _SONS:  # 赵云长子赵统: a son the tagger missed, named
            b = next((c for n in (3, 2) if _NAME.fullmatch(c := text[after : after + n]) and text.count(c) > 1), None)
        if b is None and after > m.end():  # 孙坚有四子…长子名策: the given name alone, the father named before
            had = _HAD_SONS.search(text[max(0, m.start() - SONS_REACH) : m.start()])
            father = _tail(had.group(1), people) if had else None
            if father:
                a, end = father, m.start()
                b = next((f for f in (surname(father) + text[after : after + n] for n in (2, 1)) if f in people), None)
        if b is None or not a:
            continue
        for rel in _STATED[m.group(0)]:
            person = _person(text, end - len(a), a, b, rel, people)
            if person is None and m.group(0) in _SONS and m.start() - last[0] <= SONS_REACH:
                person = last[1]  # 懿长子司马师，次子司马昭: one father's sons, listed
            if person is not None:
                _note(out, person, rel, b, people, group_of)
                last = (m.end(), person) if m.group(0) in _SONS else last
    for m in _ADOPTED.finditer(text):  # 关平拜关公为父: a son by adoption, of another surname too
        son, father = _tail(m.group(1), people) or m.group(1).lstrip(_BIDDING), m.group(2)
        if 2 <= len(son) <= 3 and father in people:
            _note(out, father, "子", son, people, group_of, blood=False)
    eldest_of = [(f, e) for f, r, e in out if r == "长子"]
    for father, eldest in eldest_of:  # 孙坚长子孙策: 孙权's elder brother (not where two are called so: 曹昂, 曹丕)
        if sum(f == father for f, _ in eldest_of) > 1:
            continue
        for _, _, son in [t for t in out if t[0] == father and t[1] == "子" and t[2] != eldest]:
            _note(out, son, "兄", eldest, people, group_of)
    return [list(t) for t in out]


# 孙坚有四子 (the father of the sons named next by given name: 长子名策) / 寇封拜玄德为父
_HAD_SONS = re.compile(rf"([{_HAN}]{{2,6}})有[二三四五六七八九十]子")
SONS_REACH = 40
_BIDDING = "便遂乃即命使令遣教又复"  # 便命关平拜关公为父: the words before the son's name
_ADOPTED = re.compile(rf"([{_HAN}]{{2,6}})拜([{_HAN}]{{2,3}}?)为(?:义)?父")


def _tail(words: str, people: Collection[str]) -> str | None:
    """The longest end of `words` that is a known name (却说孙坚 -> 孙坚)."""
    return next((words[-n:] for n in (4, 3, 2) if len(words) >= n and words[-n:] in people), None)


def _note(
    out: dict[tuple[str, str, str], None], person: str, rel: str, relative: str, people: Collection[str],
    group_of: dict[str, set[str]], blood: bool = True,
) -> None:
    """Record a relation and its inverse, unless both name one person or (`blood`) a blood relative has another
    surname than every name of the person (刘玄德之弟关羽: a sworn brother; 公子刘琦 is no 公's son)."""
    group = group_of.get(person, {person})
    if relative in group:
        return
    if blood and rel in _BLOOD and all(surname(relative) != surname(n) for n in group):
        return
    out[(person, rel, relative)] = None
    if rel in _INVERSE and relative in people:  # 伏皇后父伏完: 伏完's daughter, not son
        inverse = "女" if rel in ("父", "母") and person.endswith(_WOMEN) else _INVERSE[rel]
        out[(relative, inverse, person)] = None


def _person(text: str, at: int, a: str, b: str, rel: str, people: Collection[str]) -> str | None:
    """Whom `a` names: itself when it is a known name; a given name alone (操) stands for the full name the text
    used in the REACH characters before (or, for blood kin, the relative's surname + it: 操父曹嵩 -> 曹操); 其 before
    blood kin for the last name of the kin's surname in the PRONOUN_REACH characters before (今操杀马腾，其子马超 ->
    马腾)."""
    if len(a) > 1:
        return a
    if a == "其" and rel in _BLOOD and b in people and b[-1] not in _NOT_END:  # 诸葛亮耳。其兄诸葛瑾
        before = text[max(0, at - PRONOUN_REACH) : at]  # 其: the last one named there of the kin's surname
        near = [n for n in people if n != b and n in before and surname(n) == surname(b) and n[-1] not in _NOT_END]
        return max(near, key=lambda n: (before.rfind(n) + len(n), len(n))) if near else None
    if a in _NOT_GIVEN:
        return None
    before = text[max(0, at - REACH) : at]
    if rel in _BLOOD and b in people and surname(b) + a in people:
        return surname(b) + a
    near = [n for n in people if len(n) in (2, 3) and n.endswith(a) and n in before]
    return max(near, key=before.rfind) if near else None


def spelled_question(words: Sequence[str], people: Collection[str]) -> str:
    """The Chinese kin question a question in Latin letters asks, from the Chinese words its names and words
    translate to (Who was Cao Cao's father? -> 曹操 父 父亲 -> 曹操的父亲); "" unless they name one of `people` and a
    kin word."""
    names = list(dict.fromkeys(w for w in words if w in people))
    kin = [w for w in words if w in KIN_WORDS]
    return f"{names[0]}的{max(kin, key=len)}" if len(names) == 1 and kin else ""


class KinTable:
    """The kin the knowledge base's documents state, by person; `relatives` reads what a query asks after."""

    def __init__(self, triples: Iterable[Sequence[str]] = (), groups: Sequence[Collection[str]] = ()) -> None:
        self._of: dict[str, list[tuple[str, str]]] = {}
        group_of = {n: g for g in groups for n in g}
        for person, rel, relative in triples:
            for name in group_of.get(person, (person,)):
                pairs = self._of.setdefault(fold(name), [])  # queries are folded (simplified script)
                if (rel, relative) not in pairs:
                    pairs.append((rel, relative))
        words = "|".join(sorted(map(re.escape, KIN_WORDS), key=len, reverse=True))
        self._asks = re.compile(rf"(?:的|之)?({words})")

    def __len__(self) -> int:
        return len(self._of)

    def relatives(self, query: str) -> list[str]:
        """The names of the kin the `query` (folded: normalize.fold) asks after by a kin word right after a
        person's name (曹操的父亲, 诸葛亮儿子 -> their mined names, in the documents' script), in the order the text
        stated them; [] when it asks after none or the knowledge base states none."""
        return self.resolve(query)[0]

    def resolve(self, query: str) -> tuple[list[str], str]:
        """`relatives`, and the query without the kin words they stand for (诸葛亮的哥哥是谁 -> 诸葛亮 是谁: the novel
        says 兄, and 哥哥 in its dialogue is anyone's)."""
        out: list[str] = []
        cut: list[tuple[int, int]] = []  # the kin words resolved
        for m in self._asks.finditer(query):
            chars = KIN_WORDS[m.group(1)]
            after = query[m.end() : m.end() + 1]
            if len(m.group(1)) == 1 and re.match(rf"[{_HAN}]", after) and after not in "是叫名姓为":
                continue  # 关羽父子, 曹操母子: a word of its own, not "X's father"
            before = query[: m.start()]
            person = next((before[-n:] for n in (4, 3, 2) if before[-n:] in self._of), None)
            if person is None:
                continue
            # 儿子 asks for every son, 长子 for the eldest only; 夫人 for a wife (妻)
            found = [r for rel, r in self._of[person] if rel == chars or (len(rel) == 1 and rel in chars
                                                                          and chars not in _STATED)]  # fmt: skip
            if found:
                out += [r for r in dict.fromkeys(found) if r not in out]
                cut.append(m.span())
        rest = query
        for a, b in reversed(cut):
            rest = rest[:a] + " " + rest[b:]  # a gap: no new word across it (亮是)
        return out, rest
