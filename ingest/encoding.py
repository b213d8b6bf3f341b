"""Turn a text file's bytes into str: BOMs, UTF-8, UTF-16 without BOM, GB18030/GBK, then a detector."""

from __future__ import annotations

import codecs
import unicodedata

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


class DecodeError(ValueError):
    """The bytes are binary or in no encoding we can read; the message is the reason."""


def _utf16_without_bom(data: bytes) -> str | None:
    # Text in UTF-16 has its NULs (from ASCII spaces, newlines, digits) in one byte lane only.
    sample = data[:8192]
    if len(data) % 2 or b"\x00" not in sample:
        return None
    best: tuple[float, str] | None = None
    for enc in ("utf-16-le", "utf-16-be"):
        try:
            text = data.decode(enc)
        except UnicodeDecodeError:
            continue
        score = _plausibility(text)
        if score > 0.9 and (best is None or score > best[0]):
            best = (score, text)
    return best[1] if best else None


def _mixed_lines(data: bytes) -> str | None:
    """Files pasted together from UTF-8 and GBK sources: decode each line on its own."""
    lines = data.split(b"\n")
    non_ascii = [ln for ln in lines if not ln.isascii()]
    utf8_ok = 0
    for ln in non_ascii:
        try:
            ln.decode("utf-8")
            utf8_ok += 1
        except UnicodeDecodeError:
            pass
    if not utf8_ok or utf8_ok == len(non_ascii):
        return None
    out = []
    for ln in lines:
        try:
            out.append(ln.decode("utf-8"))
        except UnicodeDecodeError:
            out.append(ln.decode("gb18030", errors="replace"))
    return "\n".join(out)


def _plausibility(text: str) -> float:
    """Share of characters that ordinary Chinese or English prose is made of."""
    sample = text[:20000]
    if not sample:
        return 0.0
    good = sum(
        1
        for ch in sample
        if "\u4e00" <= ch <= "\u9fff"
        or "\u3000" <= ch <= "\u303f"
        or "\uff00" <= ch <= "\uffef"
        or "\u2010" <= ch <= "\u2027"
        or (ch.isascii() and (ch.isalnum() or ch in " \n\r\t.,;:!?'\"()-"))
    )
    return good / len(sample)


def _looks_binary(text: str) -> bool:
    """Many control or unassigned characters: not human text, whatever decoded it."""
    sample = text[:20000]
    if not sample:
        return False
    bad = sum(
        1
        for ch in sample
        if (unicodedata.category(ch) in ("Cc", "Cn", "Co", "Cs") and ch not in "\n\r\t\f\v") or ch == "\ufffd"
    )
    return bad / len(sample) > 0.05


def decode_bytes(data: bytes) -> tuple[str, str]:
    """Return (text, encoding name). Raises DecodeError for empty, binary or undecodable input."""
    if not data.strip():
        raise DecodeError("empty file")
    for bom, enc in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(enc), enc + "-bom"
            except UnicodeDecodeError as exc:
                raise DecodeError(f"has a {enc} byte-order mark but does not decode as {enc}: {exc}") from exc
    text = _utf16_without_bom(data)
    if text is not None and not _looks_binary(text):
        return text, "utf-16"
    if b"\x00" in data[:8192]:
        raise DecodeError("binary file (NUL bytes), not text")
    candidates: list[tuple[str, str]] = []
    try:
        candidates.append((data.decode("utf-8"), "utf-8"))
    except UnicodeDecodeError:
        mixed = _mixed_lines(data)
        if mixed is not None:
            candidates.append((mixed, "mixed utf-8/gb18030"))
        else:
            for enc in ("gb18030", "utf-16-le", "utf-16-be"):
                if enc.startswith("utf-16") and len(data) % 2:
                    continue
                try:
                    candidates.append((data.decode(enc), enc))
                except UnicodeDecodeError:
                    pass
            candidates.sort(key=lambda c: -_plausibility(c[0]))
    if not candidates:
        from charset_normalizer import from_bytes

        best = from_bytes(data).best()
        if best is not None:
            candidates.append((str(best), best.encoding))
    for text, enc in candidates:
        if not _looks_binary(text):
            return text, enc
    raise DecodeError("binary or undecodable content (tried UTF-8, UTF-16, GB18030 and a detector)")
