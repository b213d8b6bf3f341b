"""Knowledge-base uploads, confined to their directory: plain names only, no links followed, atomic writes."""

from __future__ import annotations

from pathlib import Path

from fastapi import UploadFile

from ingest.fsio import atomic_open

from .errors import BadRequest

MAX_NAME_BYTES = 255


def upload_target(upload_dir: Path, name: str | None) -> Path:
    """Where an upload called `name` goes, or BadRequest: empty, hidden, with a path separator or `..`, control
    characters, too long, or an existing symbolic link (which could point out of the directory)."""
    shown = repr(shown_name(name))
    if name and len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        size = len(name.encode("utf-8", "surrogatepass"))
        raise BadRequest(f"refused file name {shown}: too long ({size} bytes in UTF-8, at most {MAX_NAME_BYTES})",
                         param="files")
    if not name or name.startswith(".") or any(c in name for c in "/\\\x00") or any(ord(c) < 32 for c in name):
        raise BadRequest(f"refused file name {shown}: give a plain file name (no folders, not hidden)", param="files")
    root = upload_dir.resolve()
    target = root / name
    if target.is_symlink() or target.resolve().parent != root:
        raise BadRequest(f"refused file name {shown}: it names a link out of the upload folder", param="files")
    return target


def shown_name(name: str | None, most: int = 60) -> str | None:
    """A client's file name as an answer shows it: at most `most` characters (a refused name may be kilobytes)."""
    return name if name is None or len(name) <= most else name[: most - 1] + "…"


async def save_upload(upload_dir: Path, f: UploadFile) -> Path:
    """Write the upload under a fresh temporary name (O_EXCL: never through a planted link), then rename it
    into place, so readers never see half a file."""
    upload_dir.mkdir(parents=True, exist_ok=True)
    target = upload_target(upload_dir, f.filename)
    with atomic_open(target, "wb", perm=0o600) as out:  # the rename replaces a link itself, never its target
        while chunk := await f.read(1 << 20):
            out.write(chunk)
    return target
