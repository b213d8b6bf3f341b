"""Clean raw text: drop web boilerplate that frames or repeats, unwrap hard-wrapped lines, tidy whitespace."""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

from .headings import HEADING_START

log = logging.getLogger(__name__)

# Phrases that only web-novel download sites put into a text; a line holding one is not the author's.
_AD_PATTERNS = re.compile(
    r"(电子书下载|版权声明|购买正版|请在下载.{0,6}小时内删除|下载后.{0,6}小时内删除|仅供读者(预览|研究|学习)"
    r"|网友提供|请通过Email|整理校对|本书由.{0,12}(整理|制作))"
)
# A longer line holding an advert is text run together (a scraped copy on one line): only the advert's sentences go.
_AD_LINE_MAX = 200
_SENTENCE = re.compile(r"[^。！？!?]*(?:[。！？!?]+[”」』）)]?|$)")
_URL = re.compile(r"(https?://|www\.)[\w./%?=&-]+", re.IGNORECASE)
_SEPARATOR = re.compile(r"^[-=_*~#·.]{6,}(.{0,14}?)[-=_*~#·.]{3,}$|^[-=_*~]{6,}$")
_WEB_HEADING_PREFIX = re.compile(r"^(正文|章节目录|VIP章节)\s+(?=第)")
_ZERO_WIDTH = re.compile(r"[\u200b\u200c\u200d\u2060\ufeff]")
_SPACES = re.compile(r"[ \t\u3000\xa0\u2002\u2003\u2009]+")
HEADING_LIKE = re.compile(rf"^\s*(#{{1,6}}\s|{HEADING_START})")
# the same, on a line whose digits were replaced by '#' (chapter headings repeat with changing digits)
_HEADING_TEMPLATE = re.compile(rf"^\s*(#{{1,6}}\s|(正文\s*)?{HEADING_START.replace('0-9', '#')})")
# A line that ends a sentence, or a long one, is the author's, never page furniture (headers, page numbers).
_CONTENT_END = re.compile(r"[。！？!?…」”』）)]$")
_CONTENT_LEN = 60
# The repeat-with-changing-digits rule removes at most this share of a document's characters: more than that
# is a list or numbered paragraphs (1. …, 第N条 …), not furniture.
_TEMPLATED_SHARE = 0.15
# Table rows (cells joined by " | ", as the .docx and HTML loaders write them) are data, never boilerplate.
TABLE_CELL_SEPARATOR = " | "
_LINE_SEPARATORS = str.maketrans({"\u2028": "\n", "\u2029": "\n", "\v": "\n", "\f": "\n"})
# Control characters are never text (some PDF text layers come out with a NUL before every character).
# markup a web page left in a plain-text copy: an HTML comment or script is never the reader's text (三国演义's copy has
# `<!--script>认识，“我们对任何一个命题…”。主<script-->` inside a sentence of chapter 95)
_MARKUP = re.compile(r"<!--.*?-->|<script\b[^>]*>.*?</script\s*>", re.S | re.I)
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
# Compatibility characters that PDF text layers (and some fonts) give for ordinary ones: Kangxi radicals
# (⽻ U+2FBB for 羽), CJK compatibility ideographs, Latin ligatures (ﬁ). NFKC maps these; it is applied to them
# only, because on the whole text it would also rewrite the author's full-width punctuation, spaces and digits.
_COMPAT = re.compile("[\u2e80-\u2eff\u2f00-\u2fdf\uf900-\ufaff\ufb00-\ufb06\U0002f800-\U0002fa1f]")
# CJK Radicals Supplement: NFKC maps only two of these, so the rest map to the ideograph whose glyph they share
# in CJK fonts (what Unicode's EquivalentUnifiedIdeograph.txt lists; ⻩ U+2EE9 -> 黄).
_RADICALS = dict(
    zip(
        "⺂⺃⺅⺇⺉⺋⺍⺎⺏⺐⺒⺓⺔⺕⺖⺘⺙⺛⺜⺝⺞⺠⺡⺣⺤⺦⺧⺨⺩⺫⺭⺮⺯⺰⺱⺲⺳⺶⺹⺺⺽⺾⺿⻁⻂⻃⻄⻅⻆⻇⻈⻉⻊⻋⻌⻍⻎⻐⻑⻒⻓⻔⻕⻖⻗⻘⻙⻚⻛⻜⻝⻞⻟⻠⻡⻢⻣⻤⻥⻦⻧⻨⻩⻪⻫⻬⻭⻮⻯⻰⻱⻲",
        "乛乚亻𠘨刂㔾𭕄兀尣尢巳幺彑彐忄扌攵旡日月歺民氵灬爫丬牛犭𤣩罒礻𥫗糹纟罓罒㓁羊耂肀𦥑艹艹虎衤覀西见角𧢲讠贝𧾷车辶辶辶钅長镸长门𨸏阝雨青韦页风飞食𩙿飠饣𩠐马骨鬼鱼鸟卤麦黄黾斉齐歯齿竜龙龜亀",
        strict=True,
    )
)


def normalize_compat(text: str) -> str:
    """Compatibility characters to the ordinary ones (⽻扇 -> 羽扇, ⻩⽉英 -> 黄月英); nothing else changes."""
    if not _COMPAT.search(text):
        return text
    return _COMPAT.sub(lambda m: _RADICALS.get(m[0]) or unicodedata.normalize("NFKC", m[0]), text)


@dataclass
class CleanReport:
    """What cleaning removed, for the ingest summary and for tests."""

    removed_lines: list[str] = field(default_factory=list)
    unwrapped: bool = False
    kept_repeats: int = 0  # lines that repeat with changing digits but were kept as content (see _TEMPLATED_SHARE)

    @property
    def removed_chars(self) -> int:
        return sum(len(ln) for ln in self.removed_lines)


def _template(line: str) -> str:
    return re.sub(r"\d+", "#", line.strip())


def _is_content(line: str) -> bool:
    """A stripped line that ends a sentence or is long: the author's, whatever repeats around it."""
    return bool(_CONTENT_END.search(line)) or len(line) > _CONTENT_LEN


def _templated(content: list[str], report: CleanReport | None, framed: set[str]) -> set[str]:
    """Templates of short lines that repeat 3+ times (or frame the text) with changing digits (页眉, 第 3 页,
    更新时间:…), fewest characters first, while all they remove stays under _TEMPLATED_SHARE of the document."""
    lines_of: dict[str, list[str]] = {}
    for ln in content:
        lines_of.setdefault(_template(ln), []).append(ln)
    candidates = [
        (sum(len(ln) for ln in lns), t)
        for t, lns in lines_of.items()
        if (len(lns) >= 3 or t in framed)
        and "#" in t
        and not _HEADING_TEMPLATE.match(t)
        and len(re.sub(r"[#\W]", "", t)) < len(t)
        and not any(_is_content(ln) for ln in lns)
    ]
    budget = _TEMPLATED_SHARE * sum(len(ln) for ln in content)
    chosen: set[str] = set()
    for chars, t in sorted(candidates):
        if chars > budget:
            kept = sum(len(lines_of[t]) for _, t in candidates if t not in chosen)
            log.warning(
                "kept %d repeating lines as content: removing them would drop over %d%% of the text",
                kept,
                round(100 * _TEMPLATED_SHARE),
            )
            if report is not None:
                report.kept_repeats += kept
            break
        budget -= chars
        chosen.add(t)
    return chosen


def _boilerplate_templates(lines: list[str], report: CleanReport | None = None) -> set[str]:
    """Templates of lines that frame the text (same line near both ends) or repeat with changing digits."""
    content = [ln.strip() for ln in lines if ln.strip()]
    if not content:
        return set()
    edge = max(5, min(30, len(content) // 20))
    head = {_template(ln) for ln in content[:edge]}
    tail = {_template(ln) for ln in content[-edge:]}
    framed = {t for t in head & tail if len(t) >= 6} if len(content) > 2 * edge else set()
    # the same line at both ends is a banner; lines alike but for their digits (a numbered list "1. 黄忠……。"
    # has one template at both ends) pass the checks of the repeat rule
    banners = {t for t in framed if "#" not in t}
    return banners | _templated(content, report, framed - banners)


def _is_noise(line: str, templates: set[str]) -> bool:
    s = line.strip()
    if not s or TABLE_CELL_SEPARATOR in s:
        return False
    if _template(s) in templates or _SEPARATOR.match(s) or (_AD_PATTERNS.search(s) and len(s) <= _AD_LINE_MAX):
        return True
    # A line that is mostly a web address is an advert, not prose.
    urls = "".join(m.group(0) for m in _URL.finditer(s))
    return bool(urls) and len(urls) >= 0.3 * len(s)


def _without_ad_sentences(line: str, report: CleanReport) -> str:
    """The line less its sentences that hold an advert phrase (each listed in the report's `removed_lines`)."""
    kept = []
    for sentence in _SENTENCE.findall(line):
        if _AD_PATTERNS.search(sentence):
            report.removed_lines.append(sentence.strip())
        else:
            kept.append(sentence)
    return "".join(kept)


def _wrap_width(lines: list[str]) -> int | None:
    """The column at which a hard-wrapped text was cut, or None when lines are whole paragraphs."""
    lengths = [len(ln.rstrip()) for ln in lines if ln.strip()]
    if len(lengths) < 20:
        return None
    counts = Counter(lengths)
    width, _ = counts.most_common(1)[0]
    near = [ln.rstrip() for ln in lines if ln.strip() and width - 3 <= len(ln.rstrip()) <= width + 3]
    # lines cut at a column end mid-sentence; when most of them end a sentence they are whole (a numbered list)
    ended = sum(bool(_CONTENT_END.search(ln)) for ln in near)
    return width if width >= 16 and len(near) >= 0.4 * len(lengths) and ended < 0.5 * len(near) else None


def _unwrap(lines: list[str], width: int) -> list[str]:
    out: list[str] = []
    prev_full = False
    for ln in lines:
        continues = prev_full and out and ln.strip() and not ln[:1].isspace() and not HEADING_LIKE.match(ln)
        if continues and (TABLE_CELL_SEPARATOR in ln or TABLE_CELL_SEPARATOR in out[-1]):
            continues = False  # table rows stay rows
        if continues:
            out[-1] = out[-1].rstrip() + ln.strip()
        else:
            out.append(ln)
        prev_full = len(ln.rstrip()) >= width - 3
    return out


def clean_text(text: str, report: CleanReport | None = None, blank_lines: bool = False) -> str:
    """Return the text without boilerplate, with paragraphs on one line each and tidy whitespace.

    Compatibility characters become ordinary ones (Kangxi radicals, compatibility ideographs, ligatures), but
    punctuation, spaces and digits are kept as written (no NFKC on the whole text: full-width ，。（）１ stay
    full-width). U+2028, U+2029, VT and FF break lines; other control characters go. Blank lines are dropped
    (each line is a paragraph) unless `blank_lines` (Markdown, where they separate paragraphs). HTML comments and
    scripts go, wherever they are (each one is listed in the report's `removed_lines`).
    """
    report = report if report is not None else CleanReport()
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(_LINE_SEPARATORS)
    text = normalize_compat(_CONTROL.sub("", _ZERO_WIDTH.sub("", text)))
    report.removed_lines.extend(m.group() for m in _MARKUP.finditer(text))
    text = _MARKUP.sub("", text)
    lines = text.split("\n")
    templates = _boilerplate_templates(lines, report)
    kept: list[str] = []
    for ln in lines:
        if len(ln) > _AD_LINE_MAX and _AD_PATTERNS.search(ln):
            ln = _without_ad_sentences(ln, report)
        if _is_noise(ln, templates):
            report.removed_lines.append(ln.strip())
            # keep a paragraph break where a line was removed
            kept.append("")
        else:
            kept.append(ln)
    width = _wrap_width(kept)
    if width:
        kept = _unwrap(kept, width)
        report.unwrapped = True
    if report.removed_lines:
        log.info(
            "cleaning removed %d lines (%d characters) as boilerplate, e.g. %r",
            len(report.removed_lines),
            report.removed_chars,
            report.removed_lines[0][:40],
        )
    out: list[str] = []
    for ln in kept:
        s = _SPACES.sub(" ", ln).strip()
        s = _WEB_HEADING_PREFIX.sub("", s)
        if s or (blank_lines and out and out[-1]):
            out.append(s)
    return "\n".join(out).strip() + "\n"
