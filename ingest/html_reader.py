"""Read an HTML page's text: headings as Markdown, table rows as lines of " | "-separated cells, no page chrome.

The <title> is returned as the document's title and left out of the text; scripts, styles, navigation, forms and
the page's own header and footer are dropped (a <header> or <footer> inside an <article>, <main> or <section>
is content and kept).
"""

from __future__ import annotations

import re
from typing import Any

from .cleaning import TABLE_CELL_SEPARATOR

_DROP = ["script", "style", "nav", "aside", "noscript", "form", "title", "template", "iframe", "svg", "button"]
_BLOCKS = ["p", "li", "div", "tr", "blockquote", "pre", "dt", "dd", "section", "article", "figcaption", "table"]
_CJK = "\u3000-\u9fff\uff00-\uffef"
# A source line break between two CJK characters is not a space (CSS drops it there too).
_CJK_BREAK = re.compile(rf"(?<=[{_CJK}])[ \t\r]*\n\s*(?=[{_CJK}])")
_WHITESPACE = re.compile(r"\s+")
_HEADINGS = ["h1", "h2", "h3", "h4", "h5", "h6"]
_LAYOUT_CELL_CHARS = 200


def _title(soup: Any) -> str | None:
    if soup.title is not None and (title := soup.title.get_text(" ", strip=True)):
        return str(title)
    meta = soup.find("meta", attrs={"property": "og:title"})
    content = meta.get("content") if meta is not None else None
    return content.strip() or None if isinstance(content, str) else None


def _collapse_whitespace(soup: Any) -> None:
    """Whitespace in the source is layout, not text (outside <pre>): one space, none between CJK lines."""
    from bs4 import NavigableString

    for s in list(soup.find_all(string=True)):
        if type(s) is NavigableString and s.find_parent("pre") is None:
            s.replace_with(_WHITESPACE.sub(" ", _CJK_BREAK.sub("", str(s))))


def _is_layout(table: Any) -> bool:
    """A table that lays out a page (old sites put whole chapters in one): a cell with headings, or with
    several paragraphs and much text. Its cells are read as blocks, not as one line each."""
    for cell in table.find_all(["td", "th"]):
        if cell.find_parent("table") is not table:
            continue
        if cell.find(_HEADINGS) is not None:
            return True
        blocks = len(cell.find_all(["p", "div", "br", "li"]))
        if blocks >= 2 and len(cell.get_text(strip=True)) > _LAYOUT_CELL_CHARS:
            return True
    return False


def _flatten_tables(soup: Any) -> None:
    """Each data table becomes its caption and its rows, one line per row, cells joined by " | "."""
    for table in reversed(soup.find_all("table")):  # inner tables first
        if _is_layout(table):
            for cell in table.find_all(["td", "th"]):
                cell.insert_before("\n")
                cell.insert_after("\n")
            continue
        lines = []
        caption = table.find("caption")
        if caption is not None and caption.find_parent("table") is table:
            lines.append(caption.get_text(" ", strip=True))
        for tr in table.find_all("tr"):
            if tr.find_parent("table") is not table:
                continue
            cells = [cell.get_text(" ", strip=True) for cell in tr.find_all(["td", "th"], recursive=False)]
            if any(cells):
                lines.append(TABLE_CELL_SEPARATOR.join(cells))
        table.replace_with("\n" + "\n".join(lines) + "\n")


def html_to_text(html: str) -> tuple[str, str | None]:
    """(text, the page's title or None)."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    title = _title(soup)
    for tag in soup(_DROP):
        tag.decompose()
    for tag in soup(["header", "footer"]):
        if tag.find_parent(["article", "main", "section"]) is None:
            tag.decompose()
    _collapse_whitespace(soup)
    _flatten_tables(soup)
    for level in range(1, 7):
        for h in soup.find_all(f"h{level}"):
            h.replace_with(f"\n\n{'#' * level} {h.get_text(' ', strip=True)}\n\n")
    for br in soup.find_all("br"):
        br.replace_with("\n")
    for b in soup.find_all(_BLOCKS):
        b.insert_before("\n")
        b.insert_after("\n")
    return soup.get_text(), title
