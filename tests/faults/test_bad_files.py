"""Bad files given to `ingest add`: refused or skipped with the path and the reason, never by exhausting memory,
while the rest of the batch ingests. (Empty, binary, truncated PDF and a plain zip bomb are in tests/ingest.)"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest

from ingest import pipeline
from ingest.errors import UnreadableFileError
from ingest.loaders import load_file

from .helpers import PEAK_KB, ROOT, cli, cli_env, run_measured

MiB = 2**20
IMPORTS = (
    "from pathlib import Path\nfrom ingest.loaders import load_file\nfrom ingest.errors import UnreadableFileError\n"
)


def _peak_mib(code: str) -> tuple[str, float]:
    """Run `code` in a fresh interpreter; its stdout and its peak resident memory."""
    code += f"\nimport sys\nprint('PEAK', {PEAK_KB}, file=sys.stderr)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    peak = next(int(line.split()[1]) for line in r.stderr.splitlines() if line.startswith("PEAK"))
    return r.stdout, peak / 1024


def _docx_with(
    path: Path, document_xml: Path | bytes, declared_size: int | None = None, declared_crc: int | None = None
) -> Path:
    """A real .docx (python-docx's) whose word/document.xml is replaced; `declared_size` (and `declared_crc`)
    make the archive lie about how big that part inflates to (and its checksum), as crafted zip bombs do."""
    import docx

    base = path.with_suffix(".base.docx")
    d = docx.Document()
    d.add_paragraph("玄德曰：甚善。")
    d.save(str(base))
    with zipfile.ZipFile(base) as zin, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            if info.filename != "word/document.xml":
                zout.writestr(info.filename, zin.read(info.filename))
            elif isinstance(document_xml, bytes):
                zout.writestr(info.filename, document_xml)
            else:
                with zout.open(info.filename, "w") as out, open(document_xml, "rb") as src:
                    while block := src.read(MiB):
                        out.write(block)
    base.unlink()
    if declared_size is not None:  # patch "uncompressed size" in the central directory entry
        data = bytearray(path.read_bytes())
        name = b"word/document.xml"
        at = data.rindex(name) - 46  # the central directory entry: 46 fixed bytes, then the name
        assert data[at : at + 4] == b"PK\x01\x02"
        struct.pack_into("<I", data, at + 24, declared_size)
        if declared_crc is not None:
            struct.pack_into("<I", data, at + 16, declared_crc)
        path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("lie", ["size", "size and checksum"])
def test_zip_bomb_docx_that_lies_about_its_size_is_refused_without_inflating_it(tmp_path, lie):
    xml = tmp_path / "document.xml"
    head = (b'<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml'
            b'/2006/main"><w:body><w:p><w:r><w:t>')  # fmt: skip
    with open(xml, "wb") as f:  # 400 MiB of XML that deflates to well under 1 MiB
        f.write(head)
        for _ in range(400):
            f.write(b"A" * MiB)
        f.write(b"</w:t></w:r></w:p></w:body></w:document>")
    crc = zlib.crc32(head + b"A" * (4096 - len(head))) if lie == "size and checksum" else None
    bomb = _docx_with(tmp_path / "bomb.docx", xml, declared_size=4096, declared_crc=crc)
    xml.unlink()
    assert bomb.stat().st_size < 2 * MiB
    code = (
        IMPORTS
        + f"try:\n    load_file(Path({str(bomb)!r}))\n"
        + "except UnreadableFileError as exc:\n    print('REFUSED', exc)\n"
    )
    out, peak = _peak_mib(code)
    assert out.startswith(f"REFUSED {bomb}: ") and "docx" in out
    assert peak < 300, f"peak RSS {peak:.0f} MiB: the bomb was inflated"  # 400 MiB if it had been


def test_docx_whose_xml_entities_expand_enormously_is_refused(tmp_path):
    # "billion laughs": ten levels of ten references, 10^10 characters if expanded
    entities = '<!ENTITY a0 "哈哈哈哈哈哈哈哈哈哈">' + "".join(
        f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, 10)
    )
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<!DOCTYPE w:document [{entities}]>"
        '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        "<w:body><w:p><w:r><w:t>&a9;</w:t></w:r></w:p></w:body></w:document>"
    )
    laughs = _docx_with(tmp_path / "laughs.docx", xml.encode("utf-8"))
    code = (
        IMPORTS + f"try:\n    (d,), _ = load_file(Path({str(laughs)!r}))\n    print('LOADED', len(d.text))\n"
        "except UnreadableFileError as exc:\n    print('REFUSED', exc)\n"
    )
    out, peak = _peak_mib(code)
    assert out.startswith(f"REFUSED {laughs}: "), out
    assert peak < 300, f"peak RSS {peak:.0f} MiB"


def test_a_100_mb_text_file_is_refused_by_the_size_limit_before_it_is_read(tmp_path, novel_file):
    big = tmp_path / "docs" / "huge.txt"
    paragraph = ("　　话说天下大势，分久必合，合久必分。" * 20 + "\n").encode("utf-8")
    with open(big, "wb") as f:
        while f.tell() < 100 * MiB:
            f.write(paragraph * 512)
    env = cli_env(tmp_path)
    rc, out, err, peak = run_measured(["ingest.cli", "add", str(novel_file.parent), "--no-progress"], env)
    assert rc == 1 and f"skipped: {big}: file is 100 MiB, over the 64 MiB limit" in err, err
    assert "KONGMING_MAX_FILE_MB" in err
    assert "1 documents (1 new" in out  # the rest of the batch was ingested
    big.unlink()
    rc, _, _, baseline = run_measured(
        ["ingest.cli", "add", str(novel_file.parent), "--no-progress"], cli_env(tmp_path / "again")
    )
    assert rc == 0
    assert peak < baseline + 50, f"peak {peak:.0f} MiB vs {baseline:.0f} MiB without the big file"
    # the limit is a setting: a lower one refuses smaller files, with the same message
    novel_file.write_bytes(novel_file.read_bytes() * 1000)  # ~2.5 MiB
    r = cli("ingest.cli", "add", str(novel_file), "--no-progress", env={**env, "KONGMING_MAX_FILE_MB": "1"})
    assert r.returncode == 1 and "over the 1 MiB limit" in r.stderr


def test_links_and_dot_dot_paths_out_of_the_folder_are_refused(tmp_path, settings, novel_file, embedder):
    outside = tmp_path / "private"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text("密信：三日后举火为号。\n", encoding="utf-8")
    folder = novel_file.parent
    (folder / "link.txt").symlink_to(secret)
    (folder / "linked_dir").symlink_to(outside, target_is_directory=True)
    summary = pipeline.add_paths([folder], settings, embedder=embedder)
    assert summary.added_docs == 1  # the novel
    (problem,) = summary.failed
    assert problem.path == str(folder / "link.txt") and "outside the folder" in problem.reason
    assert all(r.source != str(secret) for r in pipeline.list_documents(settings))

    # an upload folder (the service's): names that climb out of it, or links out of it, are refused
    summary = pipeline.add_paths(
        [folder / ".." / "private" / "secret.txt", folder / "link.txt", novel_file], settings, embedder=embedder,
        confine=folder,
    )  # fmt: skip
    assert summary.unchanged == 1 and len(summary.failed) == 2
    assert all("outside" in p.reason for p in summary.failed)
    assert {r.source for r in pipeline.list_documents(settings)} == {str(novel_file.resolve())}


def test_mixed_encodings_in_one_batch_all_ingest(tmp_path, settings, novel_text, embedder):
    folder = tmp_path / "enc"
    folder.mkdir()
    (folder / "utf8.txt").write_text(novel_text, encoding="utf-8")
    (folder / "gbk.txt").write_bytes(novel_text.encode("gbk"))
    (folder / "utf16.txt").write_bytes(novel_text.encode("utf-16"))
    half = len(novel_text.splitlines()) // 2
    lines = novel_text.splitlines(keepends=True)
    (folder / "mixed.txt").write_bytes("".join(lines[:half]).encode("utf-8") + "".join(lines[half:]).encode("gbk"))
    summary = pipeline.add_paths([folder], settings, embedder=embedder)
    assert summary.failed == [] and summary.added_docs == 4
    docs = {Path(r.source).name: r for r in pipeline.list_documents(settings)}
    assert {n: d.encoding for n, d in docs.items()} == {
        "utf8.txt": "utf-8", "gbk.txt": "gb18030", "utf16.txt": "utf-16-le-bom", "mixed.txt": "mixed utf-8/gb18030",
    }  # fmt: skip
    assert len({d.n_chunks for d in docs.values()}) == 1  # the same text, whatever the bytes


def test_unreadable_file_is_reported_and_skipped_and_the_rest_ingests(tmp_path, novel_text):
    """A file the user may not read (as root: the command runs without the capabilities that bypass it)."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ok.txt").write_text(novel_text, encoding="utf-8")
    locked = docs / "locked.txt"
    locked.write_text(novel_text.replace("孔明", "卧龙"), encoding="utf-8")
    locked.chmod(0o000)
    command = [sys.executable, "-m", "ingest.cli", "add", str(docs), "--no-progress"]
    if os.geteuid() == 0:  # root reads through permission bits unless it gives up the capabilities to
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv (util-linux): cannot make a file unreadable")
        command = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", *command]
    r = subprocess.run(command, env=cli_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stderr
    assert f"skipped: {locked}: permission denied" in r.stderr
    assert "1 documents (1 new" in r.stdout and "1 failed" in r.stdout
    locked.chmod(0o644)


def test_load_file_refuses_a_file_over_the_limit_without_reading_it(tmp_path):
    p = tmp_path / "sparse.txt"
    with open(p, "wb") as f:  # a sparse file: 3 GiB long, no blocks on disk
        f.truncate(3 * 2**30)
    with pytest.raises(UnreadableFileError, match=r"file is 3072 MiB, over the 64 MiB limit"):
        load_file(p)
