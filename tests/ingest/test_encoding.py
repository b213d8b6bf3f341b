import os

import pytest

from ingest.encoding import DecodeError, decode_bytes

TEXT = "第一回 宴桃园豪杰三结义\n话说天下大势，分久必合，合久必分。玄德曰：“吾乃中山靖王之后。”\n"


@pytest.mark.parametrize(
    ("encoded", "expected_encoding"),
    [
        (TEXT.encode("utf-8"), "utf-8"),
        (TEXT.encode("utf-8-sig"), "utf-8-bom"),
        (TEXT.encode("gbk"), "gb18030"),
        (TEXT.encode("gb18030"), "gb18030"),
        (TEXT.encode("utf-16"), "utf-16-le-bom"),
        (TEXT.encode("utf-16-le"), "utf-16"),
        (TEXT.encode("utf-16-be"), "utf-16"),
    ],
)
def test_decodes_common_chinese_encodings(encoded, expected_encoding):
    text, enc = decode_bytes(encoded)
    assert text == TEXT
    assert enc == expected_encoding


def test_mixed_utf8_and_gbk_lines_decode_line_by_line():
    data = "玄德曰：甚善。".encode() + b"\n" + "孔明笑曰：不然。".encode("gbk")
    text, enc = decode_bytes(data)
    assert text == "玄德曰：甚善。\n孔明笑曰：不然。"
    assert "mixed" in enc


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"", "empty"), (b" \n\t ", "empty"), (b"\x00\x01\x02" * 50, "binary"), (os.urandom(4096) + b"\x00", "binary")],
)
def test_rejects_empty_and_binary_input_with_a_reason(data, reason):
    with pytest.raises(DecodeError, match=reason):
        decode_bytes(data)
