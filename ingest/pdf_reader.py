"""Read a PDF's text layer (pypdf) and its own title (the document information's /Title, else XMP dc:title)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    return "\n".join(pages), _title(reader)
