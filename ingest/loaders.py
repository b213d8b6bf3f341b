"""Read files into documents: .txt .md .html .pdf .docx .jsonl, with encoding detection and cleaning."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .cleaning import clean_text
from .encoding import DecodeError, decode_bytes
from .errors import UnreadableFileError

log = logging.getLogger(__name__)

SUPPORTED = {".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx", ".jsonl"}
MAX_FILE_BYTES = 64 * 2**20  # the default of KONGMING_MAX_FILE_MB
MAX_UNZIPPED_BYTES = 256 * 1024 * 1024  # a .docx that inflates past this is refused (zip bomb)
_TITLE_LINE = re.compile(r"^[\[【《]?\s*([^/\]】》]{1,40}?)\s*[》]?\s*/\s*(.{1,20}?)\s*著?\s*[\]】]?$")
_JSONL_TEXT_KEYS = ("text", "content", "body", "page_content")


@dataclass
class LoadedDocument:
    """A document ready to chunk: cleaned text plus what we know about where it came from."""

    doc_id: str
    source: str
    title: str
    text: str
    fmt: str
    encoding: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class LoadProblem:
    path: str
    reason: str


def doc_id_for(path: Path) -> str:
    """Stable, readable id for a file: its stem plus a hash of its absolute path."""
    resolved = str(path.resolve())
    stem = re.sub(r"[^\w.-]+", "_", path.stem)[:40] or "doc"
    return f"{stem}-{hashlib.sha1(resolved.encode('utf-8')).hexdigest()[:8]}"


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def iter_files(paths: list[Path], confine: Path | None = None) -> Iterator[tuple[Path, str | None]]:
    """Files under the given paths (folders recursively, sorted), with a reason when one is unusable.

    A link inside a folder that points out of it is refused (not read), and so is, with `confine` (an upload
    folder), any path that resolves outside that folder, through `..` or a link.
    """
    for p in paths:
        if confine is not None and not _inside(p, confine):
            yield p, f"refused: resolves to {p.resolve()}, outside {confine} (through '..' or a link)"
        elif p.is_dir():
            for f in sorted(p.rglob("*")):
                if (
                    f.is_file()
                    and f.suffix.lower() in SUPPORTED
                    and not any(part.startswith(".") for part in f.relative_to(p).parts)
                ):
                    if _inside(f, p):
                        yield f, None
                    else:
                        yield f, f"refused: a link to {f.resolve()}, outside the folder {p}"
        elif p.is_file():
            ok = p.suffix.lower() in SUPPORTED
            yield p, None if ok else f"unsupported file type {p.suffix or '(none)'}: use one of {sorted(SUPPORTED)}"
        else:
            yield p, "no such file or folder"


def _check_size(path: Path, max_bytes: int) -> None:
    """Refuse a file over the limit before reading any of it, so a huge file cannot exhaust memory."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UnreadableFileError(path, exc.strerror or str(exc)) from exc
    if size > max_bytes:
        raise UnreadableFileError(
            path,
            f"file is {size / 2**20:.0f} MiB, over the {max_bytes / 2**20:.0f} MiB limit: split it, or raise "
            "KONGMING_MAX_FILE_MB",
        )


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except PermissionError as exc:
        raise UnreadableFileError(path, "permission denied") from exc
    except OSError as exc:
        raise UnreadableFileError(path, exc.strerror or str(exc)) from exc


def _decode(path: Path, data: bytes) -> tuple[str, str]:
    try:
        return decode_bytes(data)
    except DecodeError as exc:
        raise UnreadableFileError(path, str(exc)) from exc


def _title_from_text(text: str, fallback: str) -> str:
    for line in text.splitlines()[:5]:
        m = _TITLE_LINE.match(line.strip())
        if m:
            return m.group(1).strip(" 《》")
        if line.startswith("# "):
            return line[2:].strip()
    return fallback


def _html_to_text(html: str) -> tuple[str, str | None]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    title = soup.title.get_text(strip=True) if soup.title else None
    for tag in soup(["script", "style", "nav", "header", "footer", "aside", "noscript", "form"]):
        tag.decompose()
    for level in range(1, 7):
        for h in soup.find_all(f"h{level}"):
            h.replace_with(f"\n\n{'#' * level} {h.get_text(' ', strip=True)}\n\n")
    for br in soup.find_all("br"):
        br.replace_with("\n")
    blocks = soup.find_all(["p", "li", "div", "tr", "blockquote", "pre"])
    for b in blocks:
        b.insert_after("\n")
    return soup.get_text(), title


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


def _docx_text(path: Path, max_bytes: int) -> str:
    _check_zip(path)
    clean = _docx_copy(path, max_bytes)
    import docx

    try:
        d = docx.Document(clean)
    except Exception as exc:  # python-docx raises many types for corrupt files
        raise UnreadableFileError(path, f"cannot read .docx: {exc}") from exc
    lines = []
    for para in d.paragraphs:
        style = (para.style.name if para.style is not None else "") or ""
        m = re.match(r"Heading (\d)", style)
        text = para.text.strip()
        if m and text:
            lines.append(f"\n{'#' * int(m.group(1))} {text}\n")
        else:
            lines.append(text)
    return "\n".join(lines)


def _pdf_text(path: Path) -> str:
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
    return "\n".join(pages)


def load_file(path: Path, max_bytes: int = MAX_FILE_BYTES) -> tuple[list[LoadedDocument], list[LoadProblem]]:
    """Documents in one file (one, or one per line for .jsonl) and problems with parts of it.

    Raises UnreadableFileError when nothing of the file can be used, or when it is over `max_bytes`.
    """
    _check_size(path, max_bytes)
    suffix = path.suffix.lower()
    base_id = doc_id_for(path)
    source = str(path.resolve())
    fallback_title = path.stem.split(".")[0]
    encoding = ""
    markdown = suffix in (".md", ".markdown", ".html", ".htm", ".docx")
    if suffix == ".pdf":
        raw = _pdf_text(path)
    elif suffix == ".docx":
        raw = _docx_text(path, max_bytes)
    else:
        raw, encoding = _decode(path, _read_bytes(path))
    if suffix == ".jsonl":
        return _jsonl_documents(path, raw, base_id, source, fallback_title, encoding)
    title = None
    if suffix in (".html", ".htm"):
        raw, title = _html_to_text(raw)
    text = clean_text(raw, blank_lines=markdown)
    if not text.strip():
        raise UnreadableFileError(path, "no text after cleaning (empty, or only boilerplate)")
    title = title or _title_from_text(text, fallback_title)
    return [LoadedDocument(base_id, source, title, text, suffix.lstrip("."), encoding)], []


def _jsonl_documents(
    path: Path, raw: str, base_id: str, source: str, fallback_title: str, encoding: str
) -> tuple[list[LoadedDocument], list[LoadProblem]]:
    docs: list[LoadedDocument] = []
    problems: list[LoadProblem] = []
    seen: set[str] = set()
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(LoadProblem(f"{path}:{lineno}", f"invalid JSON: {exc.msg}"))
            continue
        if not isinstance(obj, dict):
            problems.append(LoadProblem(f"{path}:{lineno}", "not a JSON object"))
            continue
        key = next((k for k in _JSONL_TEXT_KEYS if isinstance(obj.get(k), str)), None)
        if key is None:
            problems.append(LoadProblem(f"{path}:{lineno}", f"no text field (one of {', '.join(_JSONL_TEXT_KEYS)})"))
            continue
        text = clean_text(obj[key], blank_lines=True)
        if not text.strip():
            problems.append(LoadProblem(f"{path}:{lineno}", "empty text"))
            continue
        local = str(obj.get("id", lineno))
        safe = re.sub(r"[^\w.-]+", "_", local)[:64]
        doc_id = f"{base_id}:{safe}"
        if doc_id in seen:
            problems.append(LoadProblem(f"{path}:{lineno}", f"duplicate id {local!r}: line skipped"))
            continue
        seen.add(doc_id)
        title = str(obj.get("title") or f"{fallback_title} #{local}")
        extra = {
            k: str(v) for k, v in obj.items() if k not in (key, "id", "title") and isinstance(v, str | int | float)
        }
        docs.append(LoadedDocument(doc_id, source, title, text, "jsonl", encoding, extra))
    if not docs:
        detail = f": {problems[0].reason}" if problems else ""
        raise UnreadableFileError(path, f"no usable lines in .jsonl{detail}")
    return docs, problems
