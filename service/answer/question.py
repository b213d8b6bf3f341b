"""What a question asks: its kind (who / where / when / how many / why / how / what), the words around its answer
slot, and the typed candidates (names, places, numbers, times) a sentence offers for that slot."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from ingest.kin import KIN_WORDS

Kind = Literal["who", "where", "when", "number", "why", "how", "what", "yesno"]

# Question words, the most specific first; each with the slot kind it asks for.
_WH: list[tuple[Kind, str]] = [
    ("why", r"为什么|为何|为啥|何故|什么原因|何原因|什么缘故|因何|原因是什么|是何原因"),
    ("when", r"什么时候|何时|哪一年|哪年|几时|哪一天|哪天|什么时间|何年|几月几[日号]|几月份?|哪一?个?月|几号|哪一日"),
    ("where", r"什么地方|哪里|哪儿|(?<!如)何处|何地|在哪|哪座城|哪个城|哪一城|哪座|哪个地方|哪一处|哪处|哪条|哪一座"),
    ("number", r"多大(?:年纪|岁数|年龄)?|多少岁"
               r"|多少|几[个人次年天日匹员名位座枚路万千百十种条只头支把口次岁里斤尺丈]|几|多[重长高远宽深厚久](?![要视])"),
    ("who", r"哪[一两几]?[员位个名][\u4e00-\u9fff]{0,3}?[将人臣士帅官医妃伎王僧女后帝主侯相]|什么人|何人|谁|哪一?位"
            r"|叫什么名字|叫什么|名叫什么|姓甚名谁|姓什么|姓甚"),
    ("how", r"怎么|怎样|如何|用什么办法|用什么计|何计|什么计|何法|什么办法"),
    ("what", r"什么|啥|何物|哪一?[个种件把匹条部篇首封样]|哪些|哪|何"),
    ("yesno", r"吗|有没有|是不是|是否|能否|可否"),
]
_WH_RE = [(k, re.compile(p)) for k, p in _WH]
# the last character of a noun for a person (守将, 先生, 大汉, 母亲, 之子, 化名): "X叫什么" then asks who
_PERSONS = set("将人臣士帅官医妃伎王僧女后帝主侯相父母亲妻子儿兄弟妹姐叔伯侄孙夫婿媳汉匠者生名氏婆公翁妾师友贼"
               "守史令督尉锋牧客卒童")

NUMERAL = "零〇一二两三四五六七八九十百千万亿0123456789０１２３４５６７８９"
_NUMBER = re.compile(
    rf"[数几]?[{NUMERAL}]+[余多]?(?:[万千百])?[个人骑匹员名位座枚路千百种条只头支把口次岁里斤年日天月尺丈斛石合阵队处艘家]"
    rf"|[{NUMERAL}]{{2,}}"
)
_TIME = re.compile(
    rf"(?:建安|中平|初平|兴平|建兴|章武|黄初|延熙|景耀|炎兴|太和|青龙|嘉平|赤乌|黄武|黄龙|正元|甘露|景元|咸熙|泰始|太康)"
    rf"[{NUMERAL}元]+年(?:[{NUMERAL}]+月)?|[{NUMERAL}]+月(?:[{NUMERAL}]+日)?|[春夏秋冬](?:[正腊]|[{NUMERAL}]*)月?|[正腊]月|(?<=月)[{NUMERAL}]+日|[{NUMERAL}]更|次日|当夜|是夜|来日|明日"
)
PLACE_SUFFIX = "城关山坡坂江州郡县寨亭园谷原口桥河水岭峡渡津洲湖陵阳都宫寺庙营泽滩林冈洞川台楼殿府界郊湾垒"
_PLACE = re.compile(rf"[\u4e00-\u9fff]{{1,3}}[{PLACE_SUFFIX}]")
# characters that end the words before a place name (于桃园, 人于桃园): a place match starts after the last of them
_NOT_PLACE = set("于在至到往投入屯回赴奔守过取进出之的了人兵军曰与和及从自向离")
_HAN_CHARS = re.compile(r"[\u4e00-\u9fff]")
_PUNCT = re.compile(r"[，。！？；：、“”‘’「」『』（）()《》\s,.!?;:\"']")


@dataclass
class Shape:
    """A question's slot: its kind, and the question's words just before (`left`) and after (`right`) the question
    word, within its clause."""

    kind: Kind
    left: str
    right: str
    wh: str


def kin_of(shape: Shape) -> str:
    """The novel's characters for the kin a who-question asks the name of ("X的母亲叫什么名字" -> 母), "" when it
    asks about no kin."""
    if shape.kind != "who":
        return ""
    left = re.sub(r"[是叫名姓]+$", "", shape.left)
    for word in sorted(KIN_WORDS, key=len, reverse=True):
        if left.endswith("的" + word) or (len(word) > 1 and left.endswith(word)):
            return KIN_WORDS[word]
    return ""


# What someone likes or is best at (最爱吃什么菜, 最擅长使用什么兵器, 平时喜欢…, 爱喝什么酒): the novel says it with
# one of LIKE_CHARS a few characters before the thing (喜狗马、爱音乐; 善使飞刀; 好酒), in a sentence about them.
_LIKES = re.compile(
    r"(?:最|平时|平日|平素)[^，。？！]{0,2}?(?:喜欢|喜爱|爱好|爱|擅长|善于)|喜欢|喜爱|擅长|善于|爱好"
    r"|爱(?=[吃喝穿玩看读听弹唱画写骑])"  # 爱 before a pastime's verb (周瑜爱吃什么水果), not 爱民 / 宠爱
)
LIKE_CHARS = "喜爱好善擅嗜乐"
LIKE_REACH = 3  # characters between a like character and the thing liked (善使飞刀: 0; 喜狗马: 0)
_NOT_LIKED = set("的了是在什么谁哪里几多少怎样么吗呢个种些一")


def liked_of(question: str) -> str:
    """The characters of what a question about someone's likes asks after (关羽平时最爱吃什么菜 -> 吃菜), "" when it
    asks no such thing."""
    m = _LIKES.search(question)
    if m is None:
        return ""
    tail = re.split(r"[，。？！?!,]", question[m.end() :])[0]
    return "".join(dict.fromkeys(c for c in tail if _HAN_CHARS.match(c) and c not in _NOT_LIKED))


def says_liked(text: str, liked: str) -> bool:
    """Whether `text` says someone likes or is good at one of `liked`'s characters: a LIKE_CHARS character then one
    of them within LIKE_REACH characters."""
    return bool(liked) and re.search(rf"[{LIKE_CHARS}].{{0,{LIKE_REACH}}}[{re.escape(liked)}]", text) is not None


# Whom someone learned from, or who made a thing (哪位老师, 跟谁学的, 哪个铁匠): the novel names a teacher or a smith
# beside 师 / 匠 (师事郑玄、卢植; 拜…为师), in a sentence about whom the question asks about.
_ROLES = [
    (re.compile(r"老师|师父|师傅|跟谁学|向谁学|师从|拜.{0,4}为师"), "师"),
    (re.compile(r"铁匠|工匠|匠人|巧匠"), "匠"),
]


def role_of(question: str) -> str:
    """The novel's character for the teacher or maker a question asks about (师, 匠), "" when it asks about none."""
    return next((char for pattern, char in _ROLES if pattern.search(question)), "")


# A birthday (生日, 生辰, 哪一年出生): the novel tells one, when it does, with 生 / 诞 beside the date (生于…), so a
# date or time elsewhere (次日, 当夜) is no birthday.
_BIRTH = re.compile(r"生日|生辰|出生|诞辰|诞生|生于")
BIRTH_CHARS = "生诞"


def asks_birth(question: str) -> bool:
    """Whether a question asks when someone was born."""
    return _BIRTH.search(question) is not None


def question_shape(question: str) -> Shape:
    """The kind of answer a question asks for and the words around its slot ("what" when no question word is found;
    the slot then follows the whole question)."""
    q = question.strip()
    for kind, rx in _WH_RE:
        m = rx.search(q)
        if m:
            left = _PUNCT.split(q[: m.start()])[-1]
            right = _PUNCT.split(q[m.end() :])[0]
            if kind == "who" and m.group(0).startswith("叫") and left and left.rstrip("的")[-1:] not in _PERSONS:
                kind = "what"  # 兵书叫什么名字 asks a thing's name (孟德新书), 守将叫什么 a person's
            return Shape(kind, left, right, m.group(0))
    return Shape("what", _PUNCT.split(q.rstrip("？?。！!"))[-1], "", "")


def slot_candidates(kind: Kind, text: str, names: Collection[str], head: str = "") -> list[tuple[int, int]]:
    """Spans of `text` that could fill a slot of this kind: names for who, places for where, numerals for how many,
    dates for when, for what a word ending in a character of the slot's `head` noun (什么阵 -> 八卦阵, 哪匹马 ->
    的卢马). Empty for the kinds whose answer is a clause (how, why, yes/no) and for what without a head."""
    spans: list[tuple[int, int]] = []
    if kind == "what" and head:
        heads = "".join(sorted(set(_HAN_CHARS.findall(head))))
        spans = [_trim_place(text, *m.span()) for m in re.finditer(rf"[\u4e00-\u9fff]{{1,3}}[{heads}]", text)]
    elif kind == "who":
        spans = _name_spans(text, names)
    elif kind == "number":
        spans = [m.span() for m in _NUMBER.finditer(text)]
    elif kind == "when":
        spans = _merged([m.span() for m in _TIME.finditer(text)])  # 黄龙元年 + 夏四月: one date
    elif kind == "where":
        spans = [m.span() for m in _PLACE.finditer(text)]
        spans = [_trim_place(text, a, b) for a, b in spans]
        spans += [s for s in _name_spans(text, names) if text[s[1] - 1] in PLACE_SUFFIX]
    return sorted(set(spans))


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Spans in order, each one that starts where the one before ends joined to it."""
    out: list[tuple[int, int]] = []
    for a, b in spans:
        if out and out[-1][1] == a:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def _trim_place(text: str, a: int, b: int) -> tuple[int, int]:
    """A place match without the verb or particle it swallowed (人于桃园 -> 桃园)."""
    for i in range(b - 2, a - 1, -1):
        if text[i] in _NOT_PLACE:
            return i + 1, b
    return a, b


def _name_spans(text: str, names: Collection[str]) -> list[tuple[int, int]]:
    """Non-overlapping occurrences of known names, longest first."""
    covered = [False] * len(text)
    spans = []
    for name in sorted((n for n in names if 2 <= len(n) <= 4 and n in text), key=len, reverse=True):
        start = text.find(name)
        while start >= 0:
            if not any(covered[start : start + len(name)]):
                covered[start : start + len(name)] = [True] * len(name)
                spans.append((start, start + len(name)))
            start = text.find(name, start + 1)
    return spans


# Question words that ask for a measure, and the units a filler must end in (an age for 多大 / 多大年纪 / 几岁, a year
# for 哪一年, a month for 几月几日, a height for 几尺, a weight for 多重); the first key the question word holds
# decides.
UNITS = {"多大": "岁", "岁": "岁", "年": "年", "月": "月", "号": "日", "尺": "尺丈", "多重": "斤两钧石",
         "多长": "尺丈里寸", "多高": "尺丈寸", "多深": "尺丈", "多宽": "尺丈里", "多厚": "尺寸", "多远": "里",
         "多久": "日天月年旬载"}


def fits_unit(wh: str, span: str) -> bool:
    """Whether a filler is of the unit the question word asks for; the unit follows a numeral (五百两), so a first
    character that looks like one is the numeral (两头: two, not a weight)."""
    units = next((u for w, u in UNITS.items() if w in wh), None)
    return units is None or any(u in span[1:] for u in units)
