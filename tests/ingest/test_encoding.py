import os

import pytest

from ingest.encoding import DecodeError, decode_bytes
from tests.ingest.fieldcases import field_case

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


# Traditional Chinese of several kinds: a novel, a letter, a news line, a poem, a dialogue, short labels.
TRADITIONAL = [
    "第一回 宴桃園豪傑三結義　斬黃巾英雄首立功\n話說天下大勢，分久必合，合久必分。周末七國分爭，并入於秦。\n",
    "親愛的陳先生：\n感謝您上週寄來的書籍，內容十分豐富，讓我受益良多。期待下次見面時再向您請教。\n敬祝 安康\n",
    "臺北市政府今日宣佈，明年起將擴大補助範圍，協助青年購買第一間住宅。\n",
    "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。",
    "孔明曰：「亮聞將軍欲成霸業，願聞其詳。」玄德答曰：「備不量力，欲伸大義於天下。」",
    "三國演義",
    "諸葛亮",
    "說明書",
]
SIMPLIFIED = ["三国演义", "诸葛亮", "说明书", "床前明月光，疑是地上霜。", "人民日报今日发表评论员文章。"]


@pytest.mark.parametrize("text", TRADITIONAL)
@pytest.mark.parametrize("codec", ["big5", "cp950"])
def test_big5_text_is_read_as_big5(text, codec):
    decoded, enc = decode_bytes(text.encode(codec))
    assert decoded == text
    assert enc in ("big5", "cp950", "big5hkscs")


@pytest.mark.parametrize("text", [*SIMPLIFIED, TEXT])
def test_short_and_long_gbk_text_stays_gbk(text):
    decoded, enc = decode_bytes(text.encode("gbk"))
    assert (decoded, enc) == (text, "gb18030")


def test_field_big5_file_decodes():
    decoded, enc = decode_bytes(field_case("big5_traditional.txt").read_bytes())
    assert enc in ("big5", "cp950", "big5hkscs")
    assert decoded.startswith("第一回 宴桃園豪傑三結義")
    assert "話說天下大勢，分久必合，合久必分。" in decoded


def test_utf16_without_bom_and_without_ascii_is_scored_too():
    text = "话说天下大势分久必合合久必分"
    assert decode_bytes(text.encode("utf-16-le")) == (text, "utf-16-le")


def test_other_encodings_go_to_the_detector():
    text = "Les misérables, café crème et naïveté : déjà vu à Noël. " * 4
    decoded, enc = decode_bytes(text.encode("cp1252"))
    # which Latin code page is the detector's call; the point is that no Chinese decoding was forced on it
    assert decoded.startswith("Les misérables, café cr")
    assert enc not in ("gb18030", "big5", "cp950", "big5hkscs", "utf-16-le", "utf-16-be")


def test_undecodable_message_names_what_was_tried():
    with pytest.raises(DecodeError) as err:
        decode_bytes(bytes(range(1, 256)) * 40)
    msg = str(err.value)
    assert "binary" in msg or "undecodable" in msg
    if "undecodable" in msg:
        assert "Big5" in msg and "GB18030" in msg and "detector" in msg


@pytest.mark.parametrize(
    ("legacy", "codec", "name"),
    [("孔明笑曰：不然。", "gbk", "gb18030"), ("孔明笑曰：「不然。」", "big5", "big5"), ("臺灣說明書", "cp950", "big5")],
)
def test_mixed_utf8_and_legacy_lines_use_the_legacy_encoding_that_fits(legacy, codec, name):
    data = "玄德曰：甚善。".encode() + b"\n" + legacy.encode(codec) + b"\n" + "关羽".encode()
    text, enc = decode_bytes(data)
    assert text == f"玄德曰：甚善。\n{legacy}\n关羽"
    assert enc == f"mixed utf-8/{name}"


@pytest.mark.parametrize(
    "lines",
    [
        ["雨点", "一", "也"],  # 一 (D2 BB) and 也 (D2 B2) are valid UTF-8 too, as Cyrillic letters
        ["话说天下大势，分久必合。", "只", "去", "“来！”"],
    ],
)
def test_gbk_file_with_short_lines_is_not_taken_for_mixed(lines):
    text = "\n".join(lines)
    assert decode_bytes(text.encode("gbk")) == (text, "gb18030")


def test_utf16_text_that_happens_to_be_valid_utf8_is_still_read():
    text = "外藩原是" * 3
    assert decode_bytes(text.encode("utf-16-le"))[0] == text
