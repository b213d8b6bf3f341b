"""Turn a text file's bytes into str: BOMs, UTF-8, UTF-16, then GB18030 / Big5 / UTF-16 chosen by evidence.

Legacy Chinese encodings overlap: GB18030 "decodes" almost any byte string, Big5 text included, so being
decodable proves nothing. The candidates are scored by the share of their characters that ordinary Chinese
text is made of (the common characters of GB2312 level 1 and Big5 level 1, CJK punctuation, ASCII), and the
best one wins; text in no Chinese encoding goes to charset-normalizer's detector.
"""

from __future__ import annotations

import codecs
import functools
import logging
import re
import unicodedata

log = logging.getLogger(__name__)

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
_INVALID_RUN = re.compile("[\udc80-\udcff]+")


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
        return _damaged_utf8_line(line)
    return text if any(ord(ch) > 0x7FF for ch in text) else None


def _cut_utf8_tail(data: bytes) -> tuple[bytes, int]:
    """(data without a UTF-8 character cut in half at its very end, number of bytes dropped)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if not 0x80 <= byte <= 0xBF:  # the last byte that is not a continuation byte
            need = 2 if 0xC2 <= byte <= 0xDF else 3 if 0xE0 <= byte <= 0xEF else 4 if 0xF0 <= byte <= 0xF4 else 0
            return (data[:-back], back) if need > back else (data, 0)
    return data, 0


def _damaged_utf8_line(line: bytes) -> str | None:
    """A UTF-8 line with a few damaged spots (a stray byte, a cut character), one U+FFFD in place of each.

    Evidence for UTF-8: at most 2 damaged spots, or 1% of the line's bytes, and valid multi-byte characters
    (a three-byte one counts 3, a two-byte one 1, 6 at least) outweighing the invalid bytes three to one. When
    the evidence is short of twelve to one, the UTF-8 reading must also look more like everyday Chinese than the
    GB18030 one, so that a short GBK line that happens to hold a valid UTF-8 sequence stays GBK.
    """
    escaped = line.decode("utf-8", errors="surrogateescape")  # each invalid byte as one lone surrogate
    spots = _INVALID_RUN.findall(escaped)
    if not spots or len(spots) > max(2, len(line) // 100):
        return None
    bad = sum(len(run) for run in spots)
    text = _INVALID_RUN.sub("\ufffd", escaped)
    evidence = sum(3 if ord(ch) > 0x7FF else 1 for ch in text if not ch.isascii() and ch != "\ufffd")
    if evidence < max(6, 3 * bad):
        return None
    if evidence < 12 * bad:
        legacy = line.decode("gb18030", errors="replace")
        if chinese_score(text.replace("\ufffd", "")) <= chinese_score(legacy):
            return None
    return text


def _damaged_utf8(data: bytes) -> tuple[str, int, int] | None:
    """A UTF-8 file with a few invalid bytes or a cut last character: (repaired text, invalid bytes, bytes cut).

    Every non-ASCII line must be UTF-8, whole or with a little damage: one line in a legacy encoding makes
    the file a mixed one (`_mixed_lines`)."""
    data, cut = _cut_utf8_tail(data)
    lines = data.split(b"\n")
    out: list[str] = []
    for ln in lines:
        try:
            out.append(ln.decode("utf-8"))
        except UnicodeDecodeError:
            repaired = _damaged_utf8_line(ln)
            if repaired is None:
                return None
            out.append(repaired)
    return "\n".join(out), sum(_invalid_bytes(ln) for ln in lines), cut


def _invalid_bytes(line: bytes) -> int:
    return sum(len(run) for run in _INVALID_RUN.findall(line.decode("utf-8", errors="surrogateescape")))


def _warn_damage(bad: int, cut: int) -> None:
    if bad:
        log.warning("decoded as UTF-8 with %d invalid byte(s) replaced by U+FFFD", bad)
    if cut:
        log.warning("decoded as UTF-8; dropped %d byte(s) of a character cut off at the end of the file", cut)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _utf8_or_ascii(line: bytes) -> str | None:
    return line.decode("ascii") if line.isascii() else _utf8_line(line)


def _mixed_lines(data: bytes) -> tuple[str, str] | None:
    """Files pasted together from UTF-8 and GBK (or Big5) sources: decode each line on its own.

    The lines that are not UTF-8 are decoded in the one legacy encoding that suits them all best."""
    lines = data.split(b"\n")
    utf8 = [_utf8_or_ascii(ln) for ln in lines]
    last, cut = _cut_utf8_tail(lines[-1])
    whole = _utf8_or_ascii(last) if cut and _is_utf8(last) else None
    if whole is not None:  # a UTF-8 last line, cut short
        lines[-1], utf8[-1] = last, whole
    else:
        cut = 0
    legacy = [ln for ln, text in zip(lines, utf8, strict=True) if text is None]
    if not legacy or len(legacy) == sum(1 for ln in lines if not ln.isascii()):
        return None
    best = _best_chinese(b"\n".join(legacy))
    enc = best[1] if best is not None and not best[1].startswith("utf-16") else "gb18030"
    out = [text if text is not None else ln.decode(enc, errors="replace") for ln, text in zip(lines, utf8, strict=True)]
    _warn_damage(sum(_invalid_bytes(ln) for ln, text in zip(lines, utf8, strict=True) if text is not None), cut)
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

    matches = from_bytes(data)
    match = matches.best()
    if match is None:
        return None
    # a short text scores the same in several single-byte code pages (naïve: cp1252 ï, cp1250 ď); as browsers do
    # (WHATWG: latin1 / iso-8859-1 are windows-1252), the Western one wins the tie
    tied = [m for m in matches if (m.chaos, m.coherence) == (match.chaos, match.coherence)]
    match = next((m for m in tied if m.encoding == "cp1252"), match)
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
    repaired = _damaged_utf8(data)
    if repaired is not None and not _looks_binary(repaired[0].replace("\ufffd", "")):  # few, and counted
        _warn_damage(repaired[1], repaired[2])
        return repaired[0], "utf-8"
    mixed = _mixed_lines(data)
    if mixed is not None and not _looks_binary(mixed[0].replace("\ufffd", "")):
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
