import json
import zipfile
from pathlib import Path

import pytest

from ingest.errors import UnreadableFileError
from ingest.loaders import doc_id_for, iter_files, load_file


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
