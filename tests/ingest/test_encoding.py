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


@pytest.mark.parametrize(("text", "codec"), [("Café naïve résumé", "latin-1"), ("Smørrebrød, crème brûlée", "cp1252"),
                                           ("Zażółć gęślą jaźń, które ma wiele znaków.", "cp1250")])
def test_a_short_western_text_whose_code_pages_tie_reads_as_windows_1252(text, codec):
    assert decode_bytes(text.encode(codec))[0] == text  # cp1250 read naïve as naďve; a Polish text stays cp1250


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


NOVEL = (
    "第一回 宴桃园豪杰三结义　斩黄巾英雄首立功\n"
    + "话说天下大势，分久必合，合久必分。周末七国分争，并入于秦。及秦灭之后，楚、汉分争，又并入于汉。\n" * 60
    + "玄德曰：“汉室倾颓，奸臣窃命，主上蒙尘。孤不度德量力，欲信大义于天下。”孔明曰：“愿闻将军之志。”\n"
)
SMALL = "玄德曰：甚善。\n孔明笑曰：不然。\n关羽张飞皆不悦。\n"


@pytest.mark.parametrize("text", [NOVEL, SMALL, "Liu Bei 刘备\n", "诸葛亮"])
@pytest.mark.parametrize("cut", [1, 2])
def test_utf8_file_cut_in_the_middle_of_its_last_character_stays_utf8(text, cut, caplog):
    data = text.rstrip("\n").encode()[:-cut]
    decoded, enc = decode_bytes(data)
    assert enc == "utf-8"
    assert decoded == text.rstrip("\n")[:-1]  # the cut character is dropped, nothing else changes
    assert f"dropped {3 - cut} byte(s) of a character cut off" in caplog.text


def _insert(text: str, at: str, junk: bytes) -> bytes:
    i = text.index(at)
    return text[:i].encode() + junk + text[i:].encode()


@pytest.mark.parametrize(
    ("text", "at", "junk"),
    [
        (NOVEL, "孤不度德", b"\xff"),  # a stray byte in the last paragraph of a 12 KB file
        (NOVEL, "周末七国", b"\xfe"),  # ... in the first body line
        (SMALL, "笑曰", b"\xff"),  # a small file: one stray byte
        (SMALL, "张飞", "张".encode()[:2]),  # one character cut in half mid-line
        (SMALL, "不然", b"\x80\x80"),  # two stray continuation bytes
    ],
)
def test_utf8_with_a_few_bad_bytes_is_utf8_with_replacement_characters(text, at, junk, caplog):
    decoded, enc = decode_bytes(_insert(text, at, junk))
    assert enc == "utf-8"
    assert decoded.replace("\ufffd", "") == text
    assert 1 <= decoded.count("\ufffd") <= 2
    assert f"with {len(junk)} invalid byte(s) replaced by U+FFFD" in caplog.text


def test_damaged_utf8_line_in_a_mixed_file_stays_utf8_and_gbk_lines_stay_gbk():
    data = (
        _insert("玄德曰：甚善，吾意已决。\n", "甚善", b"\xff")
        + "孔明笑曰：不然。".encode("gbk")
        + b"\n"
        + "关羽".encode()
    )
    text, enc = decode_bytes(data)
    assert text == "玄德曰：\ufffd甚善，吾意已决。\n孔明笑曰：不然。\n关羽"
    assert enc == "mixed utf-8/gb18030"


@pytest.mark.parametrize("cut", [1, 2])
def test_mixed_file_whose_last_utf8_line_is_cut_keeps_the_line_utf8(cut):
    data = "孔明笑曰：不然。".encode("gbk") + b"\n" + "玄德曰：甚善。".encode()[:-cut]
    assert decode_bytes(data) == ("孔明笑曰：不然。\n玄德曰：甚善", "mixed utf-8/gb18030")


@pytest.mark.parametrize("text", [*SIMPLIFIED, TEXT, "孔明笑曰：不然。", "昨夜西风凋碧树，独上高楼，望尽天涯路。"])
def test_gbk_files_are_not_taken_for_damaged_utf8(text):
    assert decode_bytes(text.encode("gbk")) == (text, "gb18030")
    for end in "这大你年":  # GBK characters whose last byte looks like a UTF-8 lead byte: nothing is cut
        assert decode_bytes((text + end).encode("gbk")) == (text + end, "gb18030")


@pytest.mark.parametrize("text", [NOVEL, SMALL, "孔明笑曰：不然。\n玄德曰：甚善。"])
def test_a_stray_byte_inside_a_character_is_one_damaged_spot(text, caplog):
    at = text.index("笑曰") if "笑曰" in text else text.index("孤不度德")
    raw = text.encode()
    pos = len(text[:at].encode()) + 1  # between the first and second byte of a character
    decoded, enc = decode_bytes(raw[:pos] + b"\xff" + raw[pos:])
    assert enc == "utf-8"
    assert decoded.count("\ufffd") == 1
    assert decoded.replace("\ufffd", "") == text.replace(text[at], "", 1)
    assert "with 4 invalid byte(s)" in caplog.text  # the stray byte and the three of the character it broke
