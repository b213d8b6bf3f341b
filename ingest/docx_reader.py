"""Read a .docx's text in reading order: headers, body (paragraphs, tables, content controls), notes, footers.

Table rows become lines with their cells joined by " | " (cleaning.TABLE_CELL_SEPARATOR); a cell's own
paragraphs are joined by a space. Paragraphs in Heading styles (or with an outline level) become Markdown
headings. Footnote and endnote references become [n] in the text and the notes follow the body as "[n] text".
Header and footer lines are kept when they carry text (a bare page number does not), each once.
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .cleaning import TABLE_CELL_SEPARATOR
from .errors import UnreadableFileError

MAX_UNZIPPED_BYTES = 256 * 1024 * 1024  # a .docx that inflates past this is refused (zip bomb)
W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
# Properties and alternatives whose text is not the document's (tab stops, a drawing's fallback copy).
_SKIP = {W + t for t in ("pPr", "rPr", "sdtPr", "sdtEndPr", "tblPr", "trPr", "tcPr", "tblGrid")} | {_MC_FALLBACK}
_PAGE_FIELD = re.compile(r"\b(NUM)?PAGES?\b|\bSECTIONPAGES\b")
# Elements that only wrap blocks, rows or cells: read through them.
_WRAPPERS = {W + t for t in ("sdt", "sdtContent", "customXml", "ins", "smartTag")}
_LAYOUT_CELL_CHARS = 200
_HEADING_STYLE = re.compile(r"heading\s*(\d)|title", re.IGNORECASE)
_PAGE_NUMBER = re.compile(
    r"\W*(第?\s*\d+\s*[页頁]?(\s*共\s*\d+\s*[页頁])?|(page\s*)?\d+(\s*(of|/)\s*\d+)?)\W*", re.IGNORECASE
)


def _check_zip(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            total = sum(i.file_size for i in zf.infolist())
            packed = sum(i.compress_size for i in zf.infolist()) or 1
    except zipfile.BadZipFile as exc:
        raise UnreadableFileError(path, f"not a valid .docx (zip) file: {exc}") from exc
    if total > MAX_UNZIPPED_BYTES or total / packed > 200:
        raise UnreadableFileError(
            path, f"refused: inflates to {total / 2**20:.0f} MiB from {packed / 2**20:.1f} MiB (zip bomb?)"
        )


def _docx_copy(path: Path, max_bytes: int) -> io.BytesIO:
    """A clean in-memory copy of a .docx's XML parts, each inflated in bounded steps.

    zipfile's read() inflates a whole member before it checks the declared size, so an archive that lies about
    its sizes would be expanded in memory: here reading stops at the declared size (a CRC error if the data goes
    on) and at `max_bytes` in all. Other parts (images) are left empty: the text needs none of them.
    """
    out = io.BytesIO()
    total = 0
    try:
        with zipfile.ZipFile(path) as zf, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as clean:
            for info in zf.infolist():
                data = bytearray()
                if info.filename.endswith((".xml", ".rels")):
                    with zf.open(info) as member:
                        while block := member.read(2**20):
                            total += len(block)
                            if total > max_bytes:
                                raise UnreadableFileError(
                                    path, f"refused: its XML inflates past {max_bytes / 2**20:.0f} MiB (zip bomb?)"
                                )
                            data += block
                clean.writestr(info.filename, bytes(data))
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise UnreadableFileError(path, f"corrupt .docx (zip): {exc}") from exc
    except OSError as exc:
        raise UnreadableFileError(path, exc.strerror or str(exc)) from exc
    out.seek(0)
    return out


class _Reader:
    """Walks WordprocessingML elements, numbering note references in the order they are met."""

    def __init__(self, style_names: dict[str, str]) -> None:
        self.style_names = style_names
        self.note_numbers: dict[tuple[str, str], int] = {}

    def inline(self, el: Any, out: list[str]) -> None:
        for child in el:
            tag = child.tag
            if tag in _SKIP or (tag == W + "fldSimple" and _PAGE_FIELD.search(child.get(W + "instr", ""))):
                continue
            if tag == W + "t":
                out.append(child.text or "")
            elif tag in (W + "tab", W + "ptab"):
                out.append("\t")
            elif tag in (W + "br", W + "cr"):
                out.append("\n")
            elif tag in (W + "noBreakHyphen", W + "softHyphen"):
                out.append("-" if tag == W + "noBreakHyphen" else "")
            elif tag in (W + "footnoteReference", W + "endnoteReference"):
                key = (tag, child.get(W + "id", ""))
                number = self.note_numbers.setdefault(key, len(self.note_numbers) + 1)
                out.append(f"[{number}]")
            else:
                self.inline(child, out)

    def paragraph(self, p: Any) -> str:
        out: list[str] = []
        self.inline(p, out)
        text = "".join(out).strip()
        level = self._heading_level(p)
        return f"\n{'#' * level} {text}\n" if level and text else text

    def _heading_level(self, p: Any) -> int:
        ppr = p.find(W + "pPr")
        if ppr is None:
            return 0
        outline = ppr.find(W + "outlineLvl")
        if outline is not None and (val := outline.get(W + "val", "")).isdigit() and int(val) < 6:
            return int(val) + 1
        style = ppr.find(W + "pStyle")
        name = self.style_names.get(style.get(W + "val", ""), "") if style is not None else ""
        m = _HEADING_STYLE.fullmatch(name.strip())
        return 0 if m is None else min(int(m.group(1)), 6) if m.group(1) else 1

    def cell_text(self, tc: Any) -> str:
        parts = [self.paragraph(p).strip(" #\n") for p in _through_wrappers(tc, W + "p")]
        for table in _through_wrappers(tc, W + "tbl"):  # a table inside a cell: its rows, space-separated
            parts.extend(self.table_rows(table))
        return " ".join(p for p in parts if p).replace("\n", " ")

    def _is_layout(self, tbl: Any) -> bool:
        """A table that lays out the page: a cell with a heading, or with several paragraphs and much text."""
        for tr in _through_wrappers(tbl, W + "tr"):
            for tc in _through_wrappers(tr, W + "tc"):
                paragraphs = list(_through_wrappers(tc, W + "p"))
                if any(self._heading_level(p) for p in paragraphs):
                    return True
                chars = sum(len(t.text or "") for t in tc.iter(W + "t"))
                if len(paragraphs) >= 2 and chars > _LAYOUT_CELL_CHARS:
                    return True
        return False

    def table_rows(self, tbl: Any) -> list[str]:
        if self._is_layout(tbl):  # its cells are read as blocks, one after another
            return [
                line
                for tr in _through_wrappers(tbl, W + "tr")
                for tc in _through_wrappers(tr, W + "tc")
                for line in self.blocks(tc)
            ]
        rows = []
        for tr in _through_wrappers(tbl, W + "tr"):
            cells = [self.cell_text(tc) for tc in _through_wrappers(tr, W + "tc")]
            if any(cells):
                rows.append(TABLE_CELL_SEPARATOR.join(cells))
        return rows

    def blocks(self, container: Any) -> Iterator[str]:
        """Lines of a body, header, footer or note, in document order."""
        for child in container:
            if child.tag == W + "p":
                yield self.paragraph(child)
            elif child.tag == W + "tbl":
                yield from self.table_rows(child)
            elif child.tag in _WRAPPERS:
                yield from self.blocks(child)


def _through_wrappers(el: Any, tag: str) -> Iterator[Any]:
    """Children of `el` with `tag`, also those inside content controls and other wrappers."""
    for child in el:
        if child.tag == tag:
            yield child
        elif child.tag in _WRAPPERS:
            yield from _through_wrappers(child, tag)


def _parts(document: Any, kind: str) -> list[Any]:
    """XML roots of the package's header, footer, footnotes or endnotes parts, in part-name order."""
    from lxml import etree

    found = []
    for part in document.part.package.iter_parts():
        name = str(part.partname)
        if re.fullmatch(rf"/word/{kind}\d*\.xml", name):
            found.append((name, etree.fromstring(part.blob)))
    return [root for _, root in sorted(found, key=lambda item: item[0])]


def _notes(reader: _Reader, document: Any) -> list[str]:
    lines = []
    for kind, tag in (("footnotes", "footnoteReference"), ("endnotes", "endnoteReference")):
        for root in _parts(document, kind):
            for note in root:
                number = reader.note_numbers.get((W + tag, note.get(W + "id", "")))
                if number is None:  # separators, or a note nothing refers to
                    continue
                text = " ".join(line.strip() for line in reader.blocks(note) if line.strip())
                lines.append(f"[{number}] {text}")
    return sorted(lines, key=lambda line: int(line[1 : line.index("]")]))


def _margin_lines(reader: _Reader, document: Any, kind: str) -> list[str]:
    lines: list[str] = []
    for root in _parts(document, kind):
        for line in reader.blocks(root):
            line = line.strip(" \n#")
            if line and not _PAGE_NUMBER.fullmatch(line) and line not in lines:
                lines.append(line)
    return lines


def docx_text(path: Path, max_bytes: int) -> tuple[str, str | None]:
    """(text, the document's own title or None) of a .docx; UnreadableFileError when it cannot be read."""
    _check_zip(path)
    clean = _docx_copy(path, max_bytes)
    import docx

    try:
        d = docx.Document(clean)
        style_names = {s.style_id: s.name or "" for s in d.styles}
        reader = _Reader(style_names)
        body = list(reader.blocks(d.element.body))
        notes = _notes(reader, d)
        headers = _margin_lines(reader, d, "header")
        footers = _margin_lines(reader, d, "footer")
        title = (d.core_properties.title or "").strip() or None
    except UnreadableFileError:
        raise
    except Exception as exc:  # python-docx and lxml raise many types for corrupt files
        raise UnreadableFileError(path, f"cannot read .docx: {exc}") from exc
    return "\n".join([*headers, *body, *notes, *footers]), title
