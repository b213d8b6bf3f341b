"""The .docx loader: tables, content controls, headers/footers, notes, titles, in reading order (issue 11)."""

import zipfile
from pathlib import Path

import docx
import pytest
from docx.oxml import parse_xml
from docx.oxml.ns import nsdecls

from ingest.loaders import load_file
from tests.ingest.fieldcases import field_case

W = nsdecls("w")


def _lines(path: Path) -> list[str]:
    (doc,), problems = load_file(path)
    assert problems == []
    return [ln for ln in doc.text.splitlines() if ln.strip()]


def _append_xml(d, xml: str) -> None:
    body = d.element.body
    body.insert(len(body) - 1, parse_xml(xml))  # before the section properties, which stay last


TABLES = [
    # (rows of cells, the lines expected)
    ([["姓名", "字", "官职"], ["诸葛亮", "孔明", "丞相"], ["关羽", "云长", "前将军"]], None),
    ([["年份", "兵力"], ["208", "50000"], ["219", "30000"], ["234", "100000"]], None),
    ([["营名", "主将"], ["前营", ""], ["", "魏延"]], ["营名 | 主将", "前营 |", "| 魏延"]),
]


@pytest.mark.parametrize(("rows", "expected"), TABLES)
def test_docx_table_rows_are_lines_with_cells_apart_in_reading_order(tmp_path, rows, expected):
    d = docx.Document()
    d.add_paragraph("表前的段落。")
    table = d.add_table(rows=len(rows), cols=len(rows[0]))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    d.add_paragraph("表后的段落。")
    p = tmp_path / "t.docx"
    d.save(str(p))
    want = expected or [" | ".join(row) for row in rows]
    assert _lines(p) == ["表前的段落。", *want, "表后的段落。"]


def test_docx_cell_with_several_paragraphs_and_a_nested_table(tmp_path):
    d = docx.Document()
    table = d.add_table(rows=1, cols=2)
    table.cell(0, 0).text = "赤壁"
    table.cell(0, 0).add_paragraph("建安十三年")
    inner = table.cell(0, 1).add_table(rows=1, cols=2)
    inner.cell(0, 0).text = "周瑜"
    inner.cell(0, 1).text = "黄盖"
    p = tmp_path / "nested.docx"
    d.save(str(p))
    assert _lines(p) == ["赤壁 建安十三年 | 周瑜 | 黄盖"]


def test_docx_block_and_inline_content_controls_are_read_in_place(tmp_path):
    d = docx.Document()
    d.add_paragraph("第一段。")
    _append_xml(
        d,
        f"<w:sdt {W}><w:sdtPr><w:alias w:val='督粮'/></w:sdtPr><w:sdtContent>"
        "<w:p><w:r><w:t>控件中的第一段。</w:t></w:r></w:p><w:p><w:r><w:t>控件中的第二段。</w:t></w:r></w:p>"
        "</w:sdtContent></w:sdt>",
    )
    _append_xml(
        d,
        f"<w:p {W}><w:r><w:t xml:space='preserve'>督粮官：</w:t></w:r><w:sdt><w:sdtContent>"
        "<w:r><w:t>马谡</w:t></w:r></w:sdtContent></w:sdt><w:r><w:t>，即日启程。</w:t></w:r></w:p>",
    )
    # a content control around a table row
    _append_xml(
        d,
        f"<w:tbl {W}><w:tr><w:tc><w:p><w:r><w:t>甲</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>乙</w:t></w:r></w:p>"
        "</w:tc></w:tr><w:sdt><w:sdtContent><w:tr><w:tc><w:p><w:r><w:t>丙</w:t></w:r></w:p></w:tc><w:tc><w:p>"
        "<w:r><w:t>丁</w:t></w:r></w:p></w:tc></w:tr></w:sdtContent></w:sdt></w:tbl>",
    )
    d.add_paragraph("末段。")
    p = tmp_path / "sdt.docx"
    d.save(str(p))
    assert _lines(p) == [
        "第一段。",
        "控件中的第一段。",
        "控件中的第二段。",
        "督粮官：马谡，即日启程。",
        "甲 | 乙",
        "丙 | 丁",
        "末段。",
    ]


def test_docx_headers_and_footers_carry_text_but_not_page_numbers(tmp_path):
    d = docx.Document()
    d.sections[0].header.paragraphs[0].text = "蜀汉丞相府 机密档案"
    d.sections[0].footer.paragraphs[0].text = "内部资料 请勿外传"
    d.sections[0].footer.add_paragraph("第 1 页 共 3 页")
    d.sections[0].footer.add_paragraph("Page 2 of 3")
    d.add_paragraph("正文一段。")
    p = tmp_path / "hf.docx"
    d.save(str(p))
    assert _lines(p) == ["蜀汉丞相府 机密档案", "正文一段。", "内部资料 请勿外传"]


def _add_notes(path: Path, kind: str, notes: dict[int, str]) -> None:
    """Add word/{kind}.xml (footnotes or endnotes) with its relationship and content type to a saved .docx."""
    tag = kind[:-1]  # footnote / endnote
    body = "".join(
        f"<w:{tag} w:id='{i}'><w:p><w:r><w:t>{text}</w:t></w:r></w:p></w:{tag}>" for i, text in notes.items()
    )
    separator = f"<w:{tag} w:type='separator' w:id='-1'><w:p><w:r><w:separator/></w:r></w:p></w:{tag}>"
    part = f"<?xml version='1.0' encoding='UTF-8' standalone='yes'?><w:{kind} {W}>{separator}{body}</w:{kind}>"
    with zipfile.ZipFile(path) as zf:
        files = {name: zf.read(name) for name in zf.namelist()}
    rel_type = f"http://schemas.openxmlformats.org/officeDocument/2006/relationships/{kind}"
    rels = files["word/_rels/document.xml.rels"].decode()
    rels = rels.replace("</Relationships>", f'<Relationship Id="rId{kind}" Type="{rel_type}" Target="{kind}.xml"/>')
    files["word/_rels/document.xml.rels"] = (rels + "</Relationships>").encode()
    ctype = f"application/vnd.openxmlformats-officedocument.wordprocessingml.{kind}+xml"
    types = files["[Content_Types].xml"].decode()
    types = types.replace("</Types>", f'<Override PartName="/word/{kind}.xml" ContentType="{ctype}"/></Types>')
    files["[Content_Types].xml"] = types.encode()
    files[f"word/{kind}.xml"] = part.encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)


def test_docx_footnotes_and_endnotes_follow_the_body_with_their_markers(tmp_path):
    d = docx.Document()
    _append_xml(
        d,
        f"<w:p {W}><w:r><w:t>孔明借东风</w:t></w:r><w:r><w:footnoteReference w:id='7'/></w:r>"
        "<w:r><w:t>，周瑜纵火</w:t></w:r><w:r><w:footnoteReference w:id='3'/></w:r><w:r><w:t>。</w:t></w:r></w:p>",
    )
    _append_xml(d, f"<w:p {W}><w:r><w:t>曹操败走华容道。</w:t></w:r><w:r><w:endnoteReference w:id='1'/></w:r></w:p>")
    p = tmp_path / "notes.docx"
    d.save(str(p))
    _add_notes(p, "footnotes", {3: "周瑜，字公瑾。", 7: "事见第四十九回。", 9: "无人引用的脚注。"})
    _add_notes(p, "endnotes", {1: "华容道在今湖北监利。"})
    assert _lines(p) == [
        "孔明借东风[1]，周瑜纵火[2]。",
        "曹操败走华容道。[3]",
        "[1] 事见第四十九回。",
        "[2] 周瑜，字公瑾。",
        "[3] 华容道在今湖北监利。",
    ]


def test_field_docx_keeps_its_table_and_content_control():
    (doc,), _ = load_file(field_case("docx_table_sdt.docx"))
    lines = doc.text.splitlines()
    assert "营名 | 主将 | 存粮（石）" in lines
    assert "后营 | 魏延 | 六千五百" in lines
    assert "督粮官：马谡（此段位于内容控件中）" in lines
    order = [next(i for i, ln in enumerate(lines) if key in ln) for key in ("以下为", "前营", "以上数目", "督粮官")]
    assert order == sorted(order)
    assert doc.title == "粮草调度表"  # no core title: the first heading


@pytest.mark.parametrize(
    ("core_title", "heading", "expected"),
    [
        ("羽扇考", "第一章 隆中", "羽扇考"),
        ("", "赤壁之战考", "赤壁之战考"),
        ("Microsoft Word - notes.docx", "赤壁之战考", "赤壁之战考"),
        ("", None, "report_v2"),
    ],
)
def test_docx_title_prefers_core_properties_then_first_heading_then_file_name(tmp_path, core_title, heading, expected):
    d = docx.Document()
    d.core_properties.title = core_title
    if heading:
        d.add_heading(heading, level=1)
    d.add_paragraph("正文。")
    p = tmp_path / "report_v2.docx"
    d.save(str(p))
    (doc,), _ = load_file(p)
    assert doc.title == expected


def test_docx_title_style_paragraph_is_a_heading(tmp_path):
    d = docx.Document()
    d.add_heading("出师表", level=0)  # the Title style
    d.add_paragraph("臣亮言：先帝创业未半而中道崩殂。")
    p = tmp_path / "x.docx"
    d.save(str(p))
    (doc,), _ = load_file(p)
    assert doc.title == "出师表"
    assert "# 出师表" in doc.text.splitlines()


def test_docx_layout_table_holding_chapters_is_read_as_blocks(tmp_path):
    from ingest.chunking import chunk_document

    para = "话说天下大势，分久必合，合久必分。周末七国分争，并入于秦。及秦灭之后，楚汉分争，又并入于汉。"
    d = docx.Document()
    cell = d.add_table(rows=1, cols=1).cell(0, 0)
    cell.paragraphs[0].text = "第一回 宴桃园豪杰三结义"
    cell.paragraphs[0].style = d.styles["Heading 2"]
    for _ in range(3):
        cell.add_paragraph(para)
    p = tmp_path / "layout.docx"
    d.save(str(p))
    (doc,), _ = load_file(p)
    assert "## 第一回 宴桃园豪杰三结义" in doc.text.splitlines()
    assert doc.text.count(para) == 3 and " | " not in doc.text
    assert {c.chapter for c in chunk_document(doc.text, 480, 60)} == {1}
