"""Clean raw text: drop web boilerplate that frames or repeats, unwrap hard-wrapped lines, tidy whitespace."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

# Phrases that only web-novel download sites put into a text; a line holding one is not the author's.
_AD_PATTERNS = re.compile(
    r"(电子书下载|版权声明|购买正版|请在下载.{0,6}小时内删除|下载后.{0,6}小时内删除|仅供读者(预览|研究|学习)"
    r"|网友提供|请通过Email|整理校对|本书由.{0,12}(整理|制作))"
)
_URL = re.compile(r"(https?://|www\.)[\w./%?=&-]+", re.IGNORECASE)
_SEPARATOR = re.compile(r"^[-=_*~#·.]{6,}(.{0,14}?)[-=_*~#·.]{3,}$|^[-=_*~]{6,}$")
_WEB_HEADING_PREFIX = re.compile(r"^(正文|章节目录|VIP章节)\s+(?=第)")
_ZERO_WIDTH = re.compile(r"[\u200b\u200c\u200d\u2060\ufeff]")
_SPACES = re.compile(r"[ \t\u3000\xa0\u2002\u2003\u2009]+")
HEADING_LIKE = re.compile(r"^\s*(#{1,6}\s|第[0-9零〇一二两三四五六七八九十百千]+[回章节卷])")
# the same, on a line whose digits were replaced by '#' (chapter headings repeat with changing digits)
_HEADING_TEMPLATE = re.compile(r"^\s*(#{1,6}\s|(正文\s*)?第[#零〇一二两三四五六七八九十百千]+[回章节卷])")


@dataclass
class CleanReport:
    """What cleaning removed, for the ingest summary and for tests."""

    removed_lines: list[str] = field(default_factory=list)
    unwrapped: bool = False


def _template(line: str) -> str:
    return re.sub(r"\d+", "#", line.strip())


def _boilerplate_templates(lines: list[str]) -> set[str]:
    """Templates of lines that frame the text (same line near both ends) or repeat with changing digits."""
    content = [ln.strip() for ln in lines if ln.strip()]
    if not content:
        return set()
    edge = max(5, min(30, len(content) // 20))
    head = {_template(ln) for ln in content[:edge]}
    tail = {_template(ln) for ln in content[-edge:]}
    framed = {t for t in head & tail if len(t) >= 6} if len(content) > 2 * edge else set()
    counts = Counter(_template(ln) for ln in content)
    templated = {
        t
        for t, n in counts.items()
        if n >= 3 and "#" in t and not _HEADING_TEMPLATE.match(t) and len(re.sub(r"[#\W]", "", t)) < len(t)
    }
    return framed | templated


def _is_noise(line: str, templates: set[str]) -> bool:
    s = line.strip()
    if not s:
        return False
    if _template(s) in templates or _SEPARATOR.match(s) or _AD_PATTERNS.search(s):
        return True
    # A line that is mostly a web address is an advert, not prose.
    urls = "".join(m.group(0) for m in _URL.finditer(s))
    return bool(urls) and len(urls) >= 0.3 * len(s)


def _wrap_width(lines: list[str]) -> int | None:
    """The column at which a hard-wrapped text was cut, or None when lines are whole paragraphs."""
    lengths = [len(ln.rstrip()) for ln in lines if ln.strip()]
    if len(lengths) < 20:
        return None
    counts = Counter(lengths)
    width, _ = counts.most_common(1)[0]
    near = sum(n for length, n in counts.items() if width - 3 <= length <= width + 3)
    return width if width >= 16 and near >= 0.4 * len(lengths) else None


def _unwrap(lines: list[str], width: int) -> list[str]:
    out: list[str] = []
    prev_full = False
    for ln in lines:
        continues = prev_full and out and ln.strip() and not ln[:1].isspace() and not HEADING_LIKE.match(ln)
        if continues:
            out[-1] = out[-1].rstrip() + ln.strip()
        else:
            out.append(ln)
        prev_full = len(ln.rstrip()) >= width - 3
    return out


def clean_text(text: str, report: CleanReport | None = None, blank_lines: bool = False) -> str:
    """Return the text without boilerplate, with paragraphs on one line each and tidy whitespace.

    Punctuation is kept as written (no NFKC: full-width ，。 stay full-width). Blank lines are dropped
    (each line is a paragraph) unless `blank_lines` (Markdown, where they separate paragraphs).
    """
    text = _ZERO_WIDTH.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    lines = text.split("\n")
    templates = _boilerplate_templates(lines)
    kept: list[str] = []
    for ln in lines:
        if _is_noise(ln, templates):
            if report is not None:
                report.removed_lines.append(ln.strip())
            # keep a paragraph break where a line was removed
            kept.append("")
        else:
            kept.append(ln)
    width = _wrap_width(kept)
    if width:
        kept = _unwrap(kept, width)
        if report is not None:
            report.unwrapped = True
    out: list[str] = []
    for ln in kept:
        s = _SPACES.sub(" ", ln).strip()
        s = _WEB_HEADING_PREFIX.sub("", s)
        if s or (blank_lines and out and out[-1]):
            out.append(s)
    return "\n".join(out).strip() + "\n"
