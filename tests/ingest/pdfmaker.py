"""Small PDFs for loader tests: one written byte by byte (no font needed), one through fpdf2 with a CJK font."""

from __future__ import annotations

from pathlib import Path

NOTO_CJK = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")


def handmade_pdf(text: str, title: str | None = None) -> bytes:
    """A one-page PDF whose text layer is `text`, written byte by byte (a simple font plus a ToUnicode map)."""
    codes = {ch: i + 1 for i, ch in enumerate(dict.fromkeys(text))}
    bfchars = "".join(f"<{c:02X}> <{ord(ch):04X}>\n" if ord(ch) < 0x10000 else "" for ch, c in codes.items())
    cmap = (
        "/CIDInit /ProcSet findresource begin 12 dict begin begincmap /CMapName /K def "
        "1 begincodespacerange <00> <FF> endcodespacerange "
        f"{len(codes)} beginbfchar\n{bfchars}endbfchar endcmap CMapName currentdict /CMap defineresource pop end end"
    )
    shown = "".join(f"{codes[ch]:02X}" for ch in text)
    content = f"BT /F1 12 Tf 72 720 Td <{shown}> Tj ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >> "
        "/Contents 5 0 R >>",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /ToUnicode 6 0 R >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        f"<< /Length {len(cmap)} >>\nstream\n{cmap}\nendstream",
    ]
    if title is not None:
        objects.append(f"<< /Title <FEFF{title.encode('utf-16-be').hex().upper()}> >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    info = f" /Info {len(objects)} 0 R" if title is not None else ""
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R{info} >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def fpdf_cjk(text: str, title: str | None = None) -> bytes | None:
    """The same through fpdf2 with Noto Sans CJK (Debian's fonts-noto-cjk), None when that font is missing."""
    if not NOTO_CJK.exists():
        return None
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.add_font("noto", fname=str(NOTO_CJK), collection_font_number=2)
    pdf.set_font("noto", size=12)
    pdf.multi_cell(0, 8, text)
    if title is not None:
        pdf.set_title(title)
    return bytes(pdf.output())
