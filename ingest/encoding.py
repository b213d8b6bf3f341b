"""Turn a text file's bytes into str: BOMs, UTF-8, UTF-16, then GB18030 / Big5 / UTF-16 chosen by evidence.

Legacy Chinese encodings overlap: GB18030 "decodes" almost any byte string, Big5 text included, so being
decodable proves nothing. The candidates are scored by the share of their characters that ordinary Chinese
text is made of (the common characters of GB2312 level 1 and Big5 level 1, CJK punctuation, ASCII), and the
best one wins; text in no Chinese encoding goes to charset-normalizer's detector.
"""

from __future__ import annotations

import codecs
import functools
import unicodedata

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# Tried in this order; on an equal score the earlier wins (simplified text is the more common case here).
_CJK_CANDIDATES = ("gb18030", "big5", "cp950", "big5hkscs", "utf-16-le", "utf-16-be")
# Below this share of ordinary characters a Chinese decoding is not believed; the detector is asked instead.
_MIN_SCORE = 0.6
_SAMPLE = 20000


class DecodeError(ValueError):
    """The bytes are binary or in no encoding we can read; the message is the reason."""


@functools.cache
def _common_chinese() -> frozenset[str]:
    """The everyday characters of both scripts: GB2312 level 1 (3,755 simplified) and Big5 level 1 (5,401)."""
    chars: set[str] = set()
    for hi in range(0xB0, 0xD8):
        for lo in range(0xA1, 0xFF):
            try:
                chars.add(bytes((hi, lo)).decode("gb2312"))
            except UnicodeDecodeError:
                pass
    for hi in range(0xA4, 0xC7):
        for lo in (*range(0x40, 0x7F), *range(0xA1, 0xFF)):
            if (hi, lo) < (0xC6, 0x7F):
                try:
                    chars.add(bytes((hi, lo)).decode("big5"))
                except UnicodeDecodeError:
                    pass
    return frozenset(chars)


def _ordinary(ch: str) -> bool:
    return (
        "\u3000" <= ch <= "\u303f"  # CJK punctuation
        or "\uff01" <= ch <= "\uff5e"  # full-width forms
        or "\u2010" <= ch <= "\u2027"  # quotes, dashes, ellipsis
        or ch in "\u00b7\u2236\ufe30\ufe31"
    )


def chinese_score(text: str) -> float:
    """Share of the non-ASCII characters that everyday Chinese (simplified or traditional) is made of."""
    common = _common_chinese()
    total = good = 0
    for ch in text[:_SAMPLE]:
        if ch.isascii():
            continue
        total += 1
        good += ch in common or _ordinary(ch)
    return good / total if total else 1.0


def _plausibility(text: str) -> float:
    """Share of characters that ordinary Chinese or English prose is made of."""
    sample = text[:_SAMPLE]
    if not sample:
        return 0.0
    good = sum(
        1
        for ch in sample
        if "\u4e00" <= ch <= "\u9fff"
        or _ordinary(ch)
        or (ch.isascii() and (ch.isalnum() or ch in " \n\r\t.,;:!?'\"()-"))
    )
    return good / len(sample)


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


def _utf8_line(line: bytes) -> str | None:
    """The line as UTF-8 when that is evidently what it is: it decodes, with a character past U+07FF (CJK).

    A short GBK or Big5 line can decode as UTF-8 too, but only into two-byte sequences (Latin, Greek,
    Cyrillic: 也 D2 B2 reads as Ҳ), so such a line is not taken as evidence of UTF-8.
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if any(ord(ch) > 0x7FF for ch in text) else None


def _mixed_lines(data: bytes) -> tuple[str, str] | None:
    """Files pasted together from UTF-8 and GBK (or Big5) sources: decode each line on its own.

    The lines that are not UTF-8 are decoded in the one legacy encoding that suits them all best."""
    lines = data.split(b"\n")
    utf8 = [_utf8_line(ln) if not ln.isascii() else ln.decode("ascii") for ln in lines]
    legacy = [ln for ln, text in zip(lines, utf8, strict=True) if text is None]
    if not legacy or len(legacy) == sum(1 for ln in lines if not ln.isascii()):
        return None
    best = _best_chinese(b"\n".join(legacy))
    enc = best[1] if best is not None and not best[1].startswith("utf-16") else "gb18030"
    out = [text if text is not None else ln.decode(enc, errors="replace") for ln, text in zip(lines, utf8, strict=True)]
    return "\n".join(out), f"mixed utf-8/{enc}"


def _looks_binary(text: str) -> bool:
    """Many control, private-use or unassigned characters: not human text, whatever decoded it."""
    sample = text[:_SAMPLE]
    if not sample:
        return False
    bad = sum(
        1
        for ch in sample
        if (unicodedata.category(ch) in ("Cc", "Cn", "Co", "Cs") and ch not in "\n\r\t\f\v") or ch == "\ufffd"
    )
    return bad / len(sample) > 0.05


def _best_chinese(data: bytes) -> tuple[str, str, float] | None:
    """The candidate decoding with the most everyday Chinese in it: (text, encoding, score)."""
    best: tuple[str, str, float] | None = None
    for enc in _CJK_CANDIDATES:
        if enc.startswith("utf-16") and len(data) % 2:
            continue
        try:
            text = data.decode(enc)
        except UnicodeDecodeError:
            continue
        if _looks_binary(text):
            continue
        score = chinese_score(text)
        if best is None or score > best[2]:
            best = (text, enc, score)
    return best


def _detected(data: bytes) -> tuple[str, str] | None:
    from charset_normalizer import from_bytes

    match = from_bytes(data).best()
    if match is None:
        return None
    text = str(match)
    return None if _looks_binary(text) else (text, match.encoding)


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
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        if not _looks_binary(text):
            return text, "utf-8"
    mixed = _mixed_lines(data)
    if mixed is not None and not _looks_binary(mixed[0]):
        return mixed
    best = _best_chinese(data)
    if best is not None and best[2] >= _MIN_SCORE:
        return best[0], best[1]
    detected = _detected(data)
    if detected is not None:
        return detected
    if best is not None:
        return best[0], best[1]
    raise DecodeError(
        "binary or undecodable content: no text in UTF-8, UTF-16, GB18030 or Big5 (cp950, HKSCS), and "
        "charset-normalizer's detector found no encoding either"
    )
