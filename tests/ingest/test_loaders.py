import json
import zipfile
from pathlib import Path

import pytest

from ingest.errors import UnreadableFileError
from ingest.loaders import doc_id_for, iter_files, load_file
from ingest.pdf_reader import pdf_text
from tests.ingest.fieldcases import field_case


def test_txt_title_from_header_and_stable_doc_id(novel_file):
    (doc,), problems = load_file(novel_file)
    assert problems == []
    assert doc.title == "小三国"
    assert doc.doc_id == doc_id_for(novel_file) and doc.doc_id.startswith("xiao_sanguo-")
    assert doc.encoding == "utf-8"
    assert "作品仅供读者预览" not in doc.text


def test_gbk_file_loads(tmp_path, novel_text):
    p = tmp_path / "gbk.txt"
    p.write_bytes(novel_text.encode("gbk"))
    (doc,), _ = load_file(p)
    assert doc.encoding == "gb18030"
    assert "姓刘名备，字玄德" in doc.text


def test_markdown_keeps_headings(tmp_path):
    p = tmp_path / "notes.md"
    p.write_text("# 人物\n\n## 诸葛亮\n\n孔明，字孔明。\n", encoding="utf-8")
    (doc,), _ = load_file(p)
    assert doc.title == "人物"
    assert "## 诸葛亮" in doc.text


def test_html_drops_scripts_and_navigation(tmp_path):
    p = tmp_path / "page.html"
    p.write_text(
        "<html><head><title>隆中对</title><script>var x=1;</script></head><body><nav>首页 | 下一章</nav>"
        "<h1>第三十八回 定三分隆中决策</h1><p>孔明曰：“将军欲成霸业。”</p><p>玄德拜谢。</p>"
        "<footer>版权所有</footer></body></html>",
        encoding="utf-8",
    )
    (doc,), _ = load_file(p)
    assert doc.title == "隆中对"
    assert "# 第三十八回 定三分隆中决策" in doc.text
    assert "孔明曰：“将军欲成霸业。”" in doc.text and "玄德拜谢。" in doc.text
    assert "var x" not in doc.text and "首页" not in doc.text and "版权所有" not in doc.text


def test_docx_headings_become_sections(tmp_path):
    import docx

    d = docx.Document()
    d.add_heading("第一回 桃园结义", level=1)
    d.add_paragraph("玄德、关张三人结为兄弟。")
    p = tmp_path / "a.docx"
    d.save(str(p))
    (doc,), _ = load_file(p)
    assert "# 第一回 桃园结义" in doc.text
    assert "玄德、关张三人结为兄弟。" in doc.text


def test_pdf_text_is_extracted_and_truncated_pdf_is_reported(tmp_path):
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.multi_cell(0, 8, "Chapter 1. Liu Bei, Guan Yu and Zhang Fei swear brotherhood in the peach garden.")
    p = tmp_path / "ok.pdf"
    pdf.output(str(p))
    (doc,), _ = load_file(p)
    assert "peach garden" in doc.text
    bad = tmp_path / "truncated.pdf"
    bad.write_bytes(p.read_bytes()[:200])
    with pytest.raises(UnreadableFileError, match=r"truncated\.pdf"):
        load_file(bad)


def test_jsonl_one_document_per_line_with_bad_lines_reported(tmp_path):
    p = tmp_path / "notes.jsonl"
    lines = [
        json.dumps({"id": "a", "title": "甲", "text": "孔明借东风。"}, ensure_ascii=False),
        "{not json",
        json.dumps({"id": "b", "content": "周瑜打黄盖。"}, ensure_ascii=False),
        json.dumps({"id": "c", "other": 1}),
        json.dumps(["x"]),
    ]
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    docs, problems = load_file(p)
    assert [d.text.strip() for d in docs] == ["孔明借东风。", "周瑜打黄盖。"]
    assert docs[0].doc_id.endswith(":a") and docs[0].title == "甲"
    assert [(pr.path.rsplit(":", 1)[1], pr.reason.split(":")[0]) for pr in problems] == [
        ("2", "invalid JSON"),
        ("4", "no text field (one of text, content, body, page_content)"),
        ("5", "not a JSON object"),
    ]


def test_zip_bomb_docx_is_refused(tmp_path):
    p = tmp_path / "bomb.docx"
    with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("word/document.xml", b"0" * (50 * 2**20))
    with pytest.raises(UnreadableFileError, match="zip bomb"):
        load_file(p)


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.txt", b"", "empty file"),
        ("binary.txt", bytes(range(256)) * 8, "binary"),
        ("only_ads.txt", "更多TXT电子书下载,请访问:http://www.example.com\n".encode(), "no text after cleaning"),
        ("fake.docx", b"not a zip", "not a valid .docx"),
    ],
)
def test_unusable_files_raise_with_path_and_reason(tmp_path, name, data, reason):
    p = tmp_path / name
    p.write_bytes(data)
    with pytest.raises(UnreadableFileError, match=reason) as err:
        load_file(p)
    assert err.value.path == str(p)


def test_iter_files_recurses_sorted_and_flags_unsupported(tmp_path):
    (tmp_path / "b").mkdir()
    for name in ("b/2.txt", "1.md", "b/skip.exe", ".hidden/x.txt"):
        f = tmp_path / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("x")
    found = list(iter_files([tmp_path, tmp_path / "b" / "skip.exe", tmp_path / "missing.txt"]))
    rel = [(str(Path(f).relative_to(tmp_path)), r is None) for f, r in found]
    assert rel == [("1.md", True), ("b/2.txt", True), ("b/skip.exe", False), ("missing.txt", False)]


# --- issue 11: JSONL records split on "\n" only ------------------------------------------------------------------

# Characters that str.splitlines() cuts at and that JSON strings hold raw (json.dumps(ensure_ascii=False) writes
# them so; control characters such as \x1c or \x0b it escapes, and JSON forbids them raw).
SPLITLINES_BREAKS = ["\u2028", "\u2029", "\x85"]


@pytest.mark.parametrize("sep", SPLITLINES_BREAKS)
def test_jsonl_record_with_a_unicode_line_separator_is_one_record(tmp_path, sep):
    p = tmp_path / "notes.jsonl"
    records = [
        json.dumps({"id": "a", "text": f"孔明借东风。{sep}周瑜大惊。"}, ensure_ascii=False),
        "{bad json",
        json.dumps({"id": "b", "text": f"曹操{sep}败走华容道。"}, ensure_ascii=False),
        json.dumps({"id": "c"}),
    ]
    assert sep in records[0]  # written raw, as json.dumps(ensure_ascii=False) does
    p.write_text("\n".join(records) + "\n", encoding="utf-8")
    docs, problems = load_file(p)
    assert [d.doc_id.rsplit(":", 1)[1] for d in docs] == ["a", "b"]
    assert "孔明借东风。" in docs[0].text and "周瑜大惊。" in docs[0].text
    assert [pr.path.rsplit(":", 1)[1] for pr in problems] == ["2", "4"]


def test_jsonl_with_crlf_line_ends_and_a_separator_keeps_line_numbers(tmp_path):
    p = tmp_path / "crlf.jsonl"
    rows = [json.dumps({"text": "甲\u2028乙"}, ensure_ascii=False), "", "[1]", json.dumps({"text": "丙"})]
    p.write_bytes("\r\n".join(rows).encode())
    docs, problems = load_file(p)
    assert [d.doc_id.rsplit(":", 1)[1] for d in docs] == ["1", "4"]
    assert [(pr.path.rsplit(":", 1)[1], pr.reason) for pr in problems] == [("3", "not a JSON object")]


def test_field_jsonl_with_u2028_is_counted_in_real_lines(tmp_path):
    # the field file holds alpaca records (no text field); a record with text is added after it in a temp copy
    data = field_case("ft_u2028_alpaca.jsonl").read_bytes()
    p = tmp_path / "mixed.jsonl"
    p.write_bytes(data + json.dumps({"text": "借东风\u2028之事"}, ensure_ascii=False).encode() + b"\n")
    docs, problems = load_file(p)
    n = data.count(b"\n")
    assert [d.doc_id.rsplit(":", 1)[1] for d in docs] == [str(n + 1)]
    assert [pr.path.rsplit(":", 1)[1] for pr in problems] == [str(i) for i in range(1, n + 1)]


# --- issue 11: HTML tables and titles ------------------------------------------------------------------------------


def test_field_html_table_cells_apart_title_not_a_chunk():
    from ingest.chunking import chunk_document

    (doc,), _ = load_file(field_case("page_script_nav_table.html"))
    lines = doc.text.splitlines()
    assert doc.title == "蜀汉人物表"
    assert ["姓名 | 字 | 官职", "诸葛亮 | 孔明 | 丞相", "关羽 | 云长 | 前将军"] == [ln for ln in lines if "|" in ln]
    for junk in ("trackingId", "广告位", "首页", "登录", "每日更新", "版权所有", ".x{"):
        assert junk not in doc.text
    chunks = chunk_document(doc.text, size=480, overlap=60)
    assert all(c.text != doc.title for c in chunks)
    assert any("诸葛亮 | 孔明 | 丞相" in c.text for c in chunks)


HTML_TABLES = [
    (
        "<table><caption>兵力</caption><thead><tr><th>年</th><th>兵</th></tr></thead>"
        "<tbody><tr><td>208</td><td>5万</td></tr><tr><td>219</td><td>3万</td></tr></tbody></table>",
        ["兵力", "年 | 兵", "208 | 5万", "219 | 3万"],
    ),
    (
        "<table>\n  <tr>\n    <td>诸葛\n亮</td>\n    <td><p>孔明</p><p>卧龙</p></td>\n  </tr>\n</table>",
        ["诸葛亮 | 孔明 卧龙"],
    ),
    (
        "<table><tr><td colspan='2'>蜀汉</td></tr><tr><td>刘备</td><td><table><tr><td>关羽</td><td>张飞</td></tr>"
        "</table></td></tr></table>",
        ["蜀汉", "刘备 | 关羽 | 张飞"],
    ),
]


@pytest.mark.parametrize(("table", "rows"), HTML_TABLES)
def test_html_tables_keep_rows_and_cells_apart(tmp_path, table, rows):
    p = tmp_path / "t.html"
    p.write_text(f"<html><body><p>表前。</p>{table}<p>表后。</p></body></html>", encoding="utf-8")
    (doc,), _ = load_file(p)
    assert [ln for ln in doc.text.splitlines() if ln] == ["表前。", *rows, "表后。"]


@pytest.mark.parametrize(
    ("head", "body", "title"),
    [
        ("<title>隆中对</title>", "<h1>第三十八回</h1><p>正文。</p>", "隆中对"),
        ("<meta property='og:title' content='出师表'>", "<h1>前出师表</h1><p>正文。</p>", "出师表"),
        ("<title></title>", "<h1>赤壁</h1><p>正文。</p>", "赤壁"),
        ("", "<p>正文。</p>", "page_9"),
    ],
)
def test_html_title_from_title_then_og_title_then_first_heading_then_file_name(tmp_path, head, body, title):
    p = tmp_path / "page_9.html"
    p.write_text(f"<html><head>{head}</head><body>{body}</body></html>", encoding="utf-8")
    (doc,), _ = load_file(p)
    assert doc.title == title
    assert title not in doc.text.splitlines()  # the <title> is no line (no chunk) of its own


def test_html_article_header_is_content_but_page_header_is_not(tmp_path):
    p = tmp_path / "a.html"
    p.write_text(
        "<body><header>站点导航 登录</header><article><header><h1>空城计</h1></header><p>孔明抚琴。</p>"
        "</article><footer>版权所有</footer></body>",
        encoding="utf-8",
    )
    (doc,), _ = load_file(p)
    assert doc.text.splitlines() == ["# 空城计", "", "孔明抚琴。"]


# --- issue 11: titles and compatibility characters, per format ----------------------------------------------------


def test_markdown_title_is_the_first_heading_even_below_front_matter(tmp_path):
    p = tmp_path / "notes.md"
    p.write_text(
        "作者：某某\n\n日期：二〇二六年\n\n说明文字。\n\n## 草船借箭考\n\n正文。\n\n# 另一个\n", encoding="utf-8"
    )
    (doc,), _ = load_file(p)
    assert doc.title == "草船借箭考"


@pytest.mark.parametrize(
    ("title", "expected"),
    [("羽扇考", "羽扇考"), ("⽻扇考", "羽扇考"), ("untitled", "yushan"), ("yushan.docx", "yushan"), (None, "yushan")],
)
def test_pdf_title_from_its_metadata_else_the_file_name(tmp_path, title, expected):
    from tests.ingest.pdfmaker import handmade_pdf

    p = tmp_path / "yushan.pdf"
    p.write_bytes(handmade_pdf("诸葛亮羽扇纶巾。", title))
    (doc,), _ = load_file(p)
    assert doc.title == expected


COMPAT_RAW = "孔明手执⽻扇，⻩⽉英在旁（笑曰：“善！”）第１回。"
COMPAT_CLEAN = "孔明手执羽扇，黄月英在旁（笑曰：“善！”）第１回。"


def _write_compat(tmp_path: Path, fmt: str) -> Path:
    import docx

    p = tmp_path / f"compat.{fmt}"
    if fmt in ("txt", "md"):
        p.write_text(COMPAT_RAW + "\n", encoding="utf-8")
    elif fmt == "html":
        p.write_text(f"<html><body><p>{COMPAT_RAW}</p></body></html>", encoding="utf-8")
    elif fmt == "jsonl":
        p.write_text(json.dumps({"text": COMPAT_RAW, "title": "⽻扇"}, ensure_ascii=False) + "\n", encoding="utf-8")
    elif fmt == "docx":
        d = docx.Document()
        d.add_paragraph(COMPAT_RAW)
        d.save(str(p))
    else:
        from tests.ingest.pdfmaker import handmade_pdf

        p.write_bytes(handmade_pdf(COMPAT_RAW))
    return p


@pytest.mark.parametrize("fmt", ["txt", "md", "html", "jsonl", "docx", "pdf"])
def test_compatibility_characters_are_normalised_in_every_format(tmp_path, fmt):
    (doc,), _ = load_file(_write_compat(tmp_path, fmt))
    assert doc.text.strip() == COMPAT_CLEAN  # full-width punctuation and digits kept as written
    if fmt == "jsonl":
        assert doc.title == "羽扇"


def test_pdf_printed_with_a_cjk_font_gives_ordinary_characters_and_its_title(tmp_path):
    from tests.ingest.pdfmaker import NOTO_CJK, fpdf_cjk

    data = fpdf_cjk(COMPAT_RAW, title="羽扇考")
    if data is None:
        pytest.skip(f"{NOTO_CJK} missing (Debian package fonts-noto-cjk); the handmade-PDF tests cover the rest")
    p = tmp_path / "printed.pdf"
    p.write_bytes(data)
    (doc,), _ = load_file(p)
    assert doc.text.strip() == COMPAT_CLEAN
    assert doc.title == "羽扇考"


def test_field_big5_file_loads_with_its_chapter():
    from ingest.chunking import chunk_document

    (doc,), _ = load_file(field_case("big5_traditional.txt"))
    assert doc.encoding in ("big5", "cp950", "big5hkscs")
    chunks = chunk_document(doc.text, size=480, overlap=60)
    assert chunks[0].metadata()["chapter"] == 1
    assert chunks[0].metadata()["chapter_title"] == "宴桃園豪傑三結義 斬黃巾英雄首立功"


@pytest.mark.parametrize("codec", ["big5", "cp950"])
def test_big5_files_of_several_lengths_load(tmp_path, codec):
    texts = ["諸葛亮", "第一章雨夜來客\n那天夜裡下著大雨。\n", "話說天下大勢，分久必合，合久必分。" * 50]
    for n, text in enumerate(texts):
        p = tmp_path / f"t{n}.txt"
        p.write_bytes(text.encode(codec))
        (doc,), _ = load_file(p)
        assert doc.text.strip() == text.strip()


def test_html_layout_table_holding_chapters_is_read_as_blocks(tmp_path):
    from ingest.chunking import chunk_document

    para = "话说天下大势，分久必合，合久必分。周末七国分争，并入于秦。及秦灭之后，楚汉分争，又并入于汉。"
    cell = f"<h2>第一回 宴桃园豪杰三结义</h2><p>{para}</p><p>{para}</p><h2>第二回 张翼德怒鞭督邮</h2><p>{para}</p>"
    p = tmp_path / "old_site.html"
    p.write_text(f"<body><table><tr><td>目录</td><td>{cell}</td></tr></table></body>", encoding="utf-8")
    (doc,), _ = load_file(p)
    assert "## 第一回 宴桃园豪杰三结义" in doc.text.splitlines()
    assert " | " not in doc.text
    assert {c.chapter for c in chunk_document(doc.text, 480, 60)} == {None, 1, 2}


def _printed_pdf(pages: list[str], header: str, footer: str, title: str | None) -> bytes:
    """A PDF as a browser prints it: `header` (date-time and title) on top, `footer` (URL and page n/m) below."""
    from fpdf import FPDF

    from tests.ingest.pdfmaker import NOTO_CJK

    pdf = FPDF()
    pdf.add_font("noto", fname=str(NOTO_CJK), collection_font_number=2)
    pdf.set_font("noto", size=10)
    pdf.set_auto_page_break(False)
    for n, body in enumerate(pages, start=1):
        pdf.add_page()
        pdf.set_xy(10, 5)
        pdf.cell(0, 6, header)
        pdf.set_xy(10, 30)
        pdf.multi_cell(0, 8, body)
        pdf.set_xy(10, 285)
        pdf.cell(0, 6, footer.format(n=n, m=len(pages)))
    if title is not None:
        pdf.set_title(title)
    return bytes(pdf.output())


PRINTED_BODY = [
    "亮躬耕陇亩，好为梁父吟。",
    "先帝不以臣卑鄙，猥自枉屈，三顾臣于草庐之中。",
    "此臣所以报先帝而忠陛下之职分也。",
]


@pytest.mark.parametrize(
    ("header", "footer", "title", "pages"),
    [
        ("11/30/26, 10:54 PM 隆中对考", "file:///tmp/nc-in/pdf.html {n}/{m}", "隆中对考", 3),
        ("2026/11/30 22:54 出师表", "https://example.org/docs/chushi.html {n}/{m}", "出师表", 2),
        ("30.11.26, 22:54 出师表", "ﬁle:///home/u/%E5%87%BA%E5%B8%88.html {n}/{m}", None, 2),  # pypdf's ﬁ
        ("11/30/26, 10:54 PM chushi.html", "file:///srv/docs/chushi.html {n}/{m}", None, 3),  # no title: file name
    ],
)
def test_browser_print_header_and_footer_are_dropped_from_pdf_text(tmp_path, header, footer, title, pages):
    from tests.ingest.pdfmaker import NOTO_CJK

    if not NOTO_CJK.exists():
        pytest.skip("fonts-noto-cjk is not installed")
    p = tmp_path / "printed.pdf"
    p.write_bytes(_printed_pdf(PRINTED_BODY[:pages], header, footer, title))
    [doc], _ = load_file(p)
    for body in PRINTED_BODY[:pages]:
        assert body in doc.text
    assert "://" not in doc.text and "/tmp" not in doc.text and ":54" not in doc.text
    assert f"1/{pages}" not in doc.text


def test_dates_and_urls_inside_pdf_body_text_are_kept(tmp_path):
    from tests.ingest.pdfmaker import NOTO_CJK

    if not NOTO_CJK.exists():
        pytest.skip("fonts-noto-cjk is not installed")
    body = "会议纪要\n2026/11/30 22:54 会议开始，讨论北伐。\n资料见 https://example.org/a.html 1/2 页。\n散会。"
    p = tmp_path / "minutes.pdf"
    p.write_bytes(_printed_pdf([body], "", "", "会议纪要"))
    text = pdf_text(p)[0].replace("\x00", "")
    assert "2026/11/30 22:54 会议开始，讨论北伐。" in text  # a date, but not beside the title
    assert "https://example.org/a.html 1/2 页。" in text  # a URL and n/m, but more after them
