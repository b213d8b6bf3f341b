"""Read a PDF's text layer (pypdf) and its own title (the document information's /Title, else XMP dc:title)."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from .errors import UnreadableFileError


def _title(reader: Any) -> str | None:
    try:
        info = reader.metadata
        title = info.title if info is not None else None
        if not title and reader.xmp_metadata is not None:
            titles = reader.xmp_metadata.dc_title or {}
            title = titles.get("x-default") or next(iter(titles.values()), None)
    except Exception:  # a broken metadata dictionary must not cost the text
        return None
    return str(title).strip() or None if title else None


# Browser print furniture: "11/30/26, 10:54 PM Title" at the top, "file:///tmp/a.html 1/2" at the bottom.
_PRINT_DATE = re.compile(
    r"(?:\d{1,4}[/.\-年]\d{1,2}[/.\-月]\d{1,4}日?|\d{1,2}\s+\w{3,9}\.?\s+\d{2,4}|\w{3,9}\.?\s+\d{1,2},?\s+\d{2,4}),?"
    r"\s*(?:上午|下午)?\s*\d{1,2}:\d{2}(?::\d{2})?\s*(?:[AaPp]\.?\s?[Mm]\.?)?(?:\s+(?P<rest>.*))?"
)
_PRINT_URL = re.compile(r"(?:file|https?)://\S+\s+\d{1,5}\s*/\s*\d{1,5}")
_EDGE = 3  # furniture sits within this many lines of a page's top or bottom (pypdf may put a header last)


def _plain(line: str) -> str:
    """The line as it reads: ligatures undone (pypdf gives "ﬁle://"), control characters (stray NULs) gone."""
    line = unicodedata.normalize("NFKC", line)
    return "".join(ch for ch in line if ch == "\t" or unicodedata.category(ch) != "Cc").strip()


def _furniture_titles(pages: list[list[str]], title: str | None) -> set[str]:
    """What a print header may show beside its date: the title, or the page's file name when it has none."""
    titles = {title.strip()} - {""} if title else set()
    for lines in pages:
        for line in lines:
            if _PRINT_URL.fullmatch(line):
                name = unquote(urlsplit(line.split()[0]).path.rstrip("/").rsplit("/", 1)[-1])
                titles.update({name, name.rsplit(".", 1)[0]} - {""})
    return titles


def _is_print_header(line: str, titles: set[str], repeated: bool) -> bool:
    m = _PRINT_DATE.fullmatch(line)
    if m is None:
        return False
    rest = (m["rest"] or "").strip()
    return (
        repeated
        or rest in titles
        or (rest.endswith(("…", "...")) and any(t.startswith(rest.rstrip(".…").strip()) for t in titles))
    )


def _drop_print_furniture(pages: list[str], title: str | None) -> list[str]:
    """Drop the header (print date-time + title) and footer (URL + page n/m) a browser prints on each page."""
    split = [[_plain(ln) for ln in page.split("\n")] for page in pages]
    titles = _furniture_titles(split, title)
    seen: dict[str, int] = {}
    for lines in split:
        for line in set(lines):
            seen[line] = seen.get(line, 0) + 1
    out = []
    for page, lines in zip(pages, split, strict=True):
        raw = page.split("\n")
        edge = set(range(min(_EDGE, len(lines)))) | set(range(max(0, len(lines) - _EDGE), len(lines)))
        drop = {
            i for i in edge if _PRINT_URL.fullmatch(lines[i]) or _is_print_header(lines[i], titles, seen[lines[i]] > 1)
        }
        out.append("\n".join(ln for i, ln in enumerate(raw) if i not in drop))
    return out


def pdf_text(path: Path) -> tuple[str, str | None]:
    """(text of all pages, the PDF's own title or None); UnreadableFileError when it cannot be read."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path), strict=False)
        if reader.is_encrypted:
            raise UnreadableFileError(path, "encrypted PDF: decrypt it first")
        pages = [page.extract_text() or "" for page in reader.pages]
    except UnreadableFileError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise UnreadableFileError(path, f"corrupt or truncated PDF: {exc}") from exc
    title = _title(reader)
    return "\n".join(_drop_print_furniture(pages, title)), title
