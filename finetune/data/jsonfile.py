"""JSON and JSON-lines data files read record by record, each record with its line, whatever the suffix says."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_WS = re.compile(r"\s+")
# Control characters (\x0b, \x1c, a raw tab) inside strings are invalid strict JSON but harmless in dialogue text:
# read them rather than drop the record (writing escapes them again).
_DECODER = json.JSONDecoder(strict=False)


class DataError(ValueError):
    """A whole data file cannot be used (missing, undecodable, unknown format); the message names the fix."""


def _skip_ws(text: str, pos: int) -> int:
    m = _WS.match(text, pos)
    return m.end() if m else pos


def _json_array(text: str) -> Iterator[tuple[int, int | None, Any, str | None]]:
    """(line, index, record, error) for each element of a JSON array, parsed one by one so each keeps its line."""
    pos = _skip_ws(text, 0) + 1  # past the "["
    line, index = 1 + text.count("\n", 0, pos), 0
    while True:
        ws = _skip_ws(text, pos)
        line += text.count("\n", pos, ws)
        pos = ws
        if text.startswith("]", pos):
            return
        try:
            rec, end = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield exc.lineno, index, None, f"malformed JSON ({exc.msg}, column {exc.colno}); records after it not read"
            return
        yield line, index, rec, None
        index += 1
        ws = _skip_ws(text, end)
        line += text.count("\n", pos, ws)
        pos = ws
        if text.startswith(",", pos):
            pos += 1
        elif not text.startswith("]", pos):
            yield line, index, None, "malformed JSON (expected ',' or ']' after a record); records after it not read"
            return


def lines(text: str) -> list[str]:
    """The lines of a JSON-lines text. They end at "\n" only: str.splitlines() also cuts at U+2028/U+2029, \x85,
    \x0b, \x0c and \x1c-\x1e, which JSON writers leave raw inside strings (json.dumps(ensure_ascii=False) does),
    and would cut such a record in two and shift every line number after it."""
    return text.split("\n")


def _json_lines(text: str) -> Iterator[tuple[int, int | None, Any, str | None]]:
    for n, raw in enumerate(lines(text), start=1):
        if not raw.strip():
            continue
        try:
            yield n, None, _DECODER.decode(raw), None
        except json.JSONDecodeError as exc:
            yield n, None, None, f"malformed JSON ({exc.msg}, column {exc.colno})"


def _load_text(path: Path) -> str:
    from ingest.encoding import DecodeError, decode_bytes

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder; point at a .json or .jsonl data file") from None
    try:
        return decode_bytes(data)[0]
    except DecodeError as exc:
        raise DataError(f"{path}: {exc}") from None


def iter_records(path: Path) -> Iterator[tuple[int, int | None, Any, str | None]]:
    """(line, index, record, parse error) for a JSON array file or a JSONL file, whatever its suffix says."""
    text = _load_text(path)
    head = text.lstrip()
    if head.startswith("["):
        return _json_array(text)
    if head.startswith("{") and "\n" in head.strip():
        try:  # one pretty-printed object rather than JSON lines
            return iter([(1 + text.count("\n", 0, text.index("{")), None, _DECODER.decode(text), None)])
        except json.JSONDecodeError:
            pass
    return _json_lines(text)
