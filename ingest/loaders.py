"""Read files into documents: .txt .md .html .pdf .docx .jsonl, with encoding detection and cleaning."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .cleaning import clean_text, normalize_compat
from .docx_reader import docx_text
from .encoding import DecodeError, decode_bytes
from .errors import UnreadableFileError
from .html_reader import html_to_text
from .pdf_reader import pdf_text

log = logging.getLogger(__name__)

SUPPORTED = {".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx", ".jsonl"}
MAX_FILE_BYTES = 64 * 2**20  # the default of KONGMING_MAX_FILE_MB
_TITLE_LINE = re.compile(r"^[\[【《]?\s*([^/\]】》]{1,40}?)\s*[》]?\s*/\s*(.{1,20}?)\s*著?\s*[\]】]?$")
_FIRST_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*$")
# Titles that tools fill in for the author: not the document's title.
_PLACEHOLDER_TITLE = re.compile(
    r"(untitled|unknown|no title|title|document\s*\d*|文档\s*\d*|无标题.*|未命名.*|新建.*文档.*|microsoft .*"
    r"|.*\.(docx?|pdf|txt|html?|md|rtf|wps|odt|pages))",
    re.IGNORECASE,
)
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


def _metadata_title(title: str | None) -> str | None:
    """The document's own title, unless it is a placeholder or a file name ("Microsoft Word - a.docx")."""
    title = normalize_compat(" ".join((title or "").split()))
    if not title or _PLACEHOLDER_TITLE.fullmatch(title):
        return None
    return title


def _title_from_text(text: str, fallback: str) -> str:
    """A "[title / author]" line at the top, else the first Markdown heading, else `fallback`."""
    lines = text.split("\n")
    for line in lines[:5]:
        m = _TITLE_LINE.match(line.strip())
        if m:
            return m.group(1).strip(" 《》")
    for line in lines[:50]:
        m = _FIRST_HEADING.match(line)
        if m:
            return m.group(1).strip()
    return fallback


def _raw_text(path: Path, suffix: str, max_bytes: int) -> tuple[str, str | None, str]:
    """(raw text, the document's own title or None, encoding) by format."""
    if suffix == ".pdf":
        return *pdf_text(path), ""
    if suffix == ".docx":
        return *docx_text(path, max_bytes), ""
    raw, encoding = _decode(path, _read_bytes(path))
    if suffix in (".html", ".htm"):
        return *html_to_text(raw), encoding
    return raw, None, encoding


def load_file(path: Path, max_bytes: int = MAX_FILE_BYTES) -> tuple[list[LoadedDocument], list[LoadProblem]]:
    """Documents in one file (one, or one per line for .jsonl) and problems with parts of it.

    Raises UnreadableFileError when nothing of the file can be used, or when it is over `max_bytes`.
    """
    _check_size(path, max_bytes)
    suffix = path.suffix.lower()
    base_id = doc_id_for(path)
    source = str(path.resolve())
    fallback_title = path.stem.split(".")[0]
    markdown = suffix in (".md", ".markdown", ".html", ".htm", ".docx")
    raw, own_title, encoding = _raw_text(path, suffix, max_bytes)
    if suffix == ".jsonl":
        return _jsonl_documents(path, raw, base_id, source, fallback_title, encoding)
    text = clean_text(raw, blank_lines=markdown)
    if not text.strip():
        raise UnreadableFileError(path, "no text after cleaning (empty, or only boilerplate)")
    title = _metadata_title(own_title) or _title_from_text(text, fallback_title)
    return [LoadedDocument(base_id, source, title, text, suffix.lstrip("."), encoding)], []


def _jsonl_documents(
    path: Path, raw: str, base_id: str, source: str, fallback_title: str, encoding: str
) -> tuple[list[LoadedDocument], list[LoadProblem]]:
    docs: list[LoadedDocument] = []
    problems: list[LoadProblem] = []
    seen: set[str] = set()
    # JSON strings may hold U+2028, U+0085 and other characters that str.splitlines() would cut at: records
    # are separated by "\n" only, so line numbers are those of any editor.
    for lineno, line in enumerate(raw.split("\n"), start=1):
        line = line.removesuffix("\r")
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
        title = _metadata_title(str(obj.get("title") or "")) or f"{fallback_title} #{local}"
        extra = {
            k: str(v) for k, v in obj.items() if k not in (key, "id", "title") and isinstance(v, str | int | float)
        }
        docs.append(LoadedDocument(doc_id, source, title, text, "jsonl", encoding, extra))
    if not docs:
        detail = f": {problems[0].reason}" if problems else ""
        raise UnreadableFileError(path, f"no usable lines in .jsonl{detail}")
    return docs, problems
