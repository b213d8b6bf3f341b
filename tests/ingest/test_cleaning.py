import pytest

from ingest.chunking import split_sections
from ingest.cleaning import CleanReport, clean_text, normalize_compat
from ingest.encoding import decode_bytes
from tests.conftest import shared_file


def test_strips_frame_and_templated_boilerplate(novel_text):
    report = CleanReport()
    text = clean_text(novel_text, report)
    assert "作品仅供读者预览" not in text
    assert "更新时间" not in text and "本章字数" not in text
    assert "章节内容开始" not in text
    assert sum("更新时间" in line for line in report.removed_lines) == 3
    # the author's text and punctuation are kept as written
    assert "大丈夫不与国家出力，何故长叹？”" in text
    assert "第一回 桃园结义 兄弟同心" in text.splitlines()


def test_repeated_lines_without_digits_are_kept():
    body = "\n".join(["正是：", "曹操大笑。", "正是：", "玄德大惊。", "正是：", "孔明抚琴。"] * 2)
    assert clean_text(body).count("正是：") == 6


def test_normalises_full_width_spaces_and_blank_lines():
    text = clean_text("　　玄德曰：　“甚善。”\n\n\n　　孔明曰：“不然。”　　\n")
    assert text == "玄德曰： “甚善。”\n孔明曰：“不然。”\n"


def test_unwraps_hard_wrapped_paragraphs():
    base = "话说天下大势，分久必合，合久必分。周末七国分争，并入于秦。及秦灭之后，楚汉分争，又并入于汉。" * 3
    paras = [base[p:] + base[:p] for p in range(12)]
    lines = []
    for para in paras:
        lines.append("    " + para[:36])
        rest = para[36:]
        while rest:
            lines.append(rest[:40])
            rest = rest[40:]
        lines.append("")
    report = CleanReport()
    text = clean_text("\n".join(lines), report)
    assert report.unwrapped
    assert text.splitlines() == paras


def test_url_and_download_site_lines_are_removed():
    text = clean_text(
        "更多TXT电子书下载,请访问雨枫轩:http://www.rain8.com\n玄德大喜。\n雨枫轩:www.rain8.com 整理校对\n"
    )
    assert text == "玄德大喜。\n"


def test_an_advert_in_text_run_onto_one_line_takes_only_its_sentences():
    body = "玄德大喜，引关、张赴宴。孔明曰：“此去必有埋伏！”" * 60  # a scraped copy with no line breaks
    ads = ["本书由某某网整理，仅供读者预览，请在下载24小时内删除。", "更多TXT电子书下载请访问本站。"]
    report = CleanReport()
    out = clean_text(ads[0] + body + ads[1], report)
    assert out.strip() == body and "下载" not in out
    assert report.removed_lines == ads


def test_gbk_hard_wrapped_copy_cleans_like_the_utf8_copy():
    utf8 = clean_text(decode_bytes(shared_file("corpus", "sanguo_yanyi.txt").read_bytes())[0])
    gbk_text, enc = decode_bytes(shared_file("corpus", "sanguo_yanyi.gbk.txt").read_bytes())
    assert enc == "gb18030"
    gbk = clean_text(gbk_text)
    a = {s.chapter: s for s in split_sections(utf8) if s.chapter}
    b = {s.chapter: s for s in split_sections(gbk) if s.chapter}
    assert set(a) == set(b) == set(range(1, 121))
    assert [s.chapter_title for s in a.values()] == [b[c].chapter_title for c in a]
    # paragraphs come out whole in both copies: the same first paragraph of every chapter, almost always
    same = sum(a[c].text.splitlines()[-1] == b[c].text.splitlines()[-1] for c in a)
    assert same >= 100


def test_chapter_headings_numbered_in_digits_are_not_boilerplate():
    text = "".join(f"第{n:03d}回 回目{n}\n{'甲乙丙丁戊'[n - 1]}曰：善。\n" for n in range(1, 6))
    assert clean_text(text).splitlines()[::2] == [f"第{n:03d}回 回目{n}" for n in range(1, 6)]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("⽻扇纶⼱", "羽扇纶巾"),  # Kangxi radicals (U+2F00 block), as Chromium's PDFs give them
        ("⻩⽉英", "黄月英"),  # CJK Radicals Supplement (⻩ U+2EE9) has no NFKC mapping: mapped by the table
        ("⻢超与⻓坂坡的⻋⻢", "马超与长坂坡的车马"),
        ("\uf9dc\uf900", "\u9686\u8c48"),  # CJK compatibility ideographs
        ("\ufb01nance", "finance"),  # a Latin ligature
    ],
)
def test_compatibility_characters_become_ordinary_ones(raw, expected):
    assert normalize_compat(raw) == expected
    assert clean_text(raw + "。\n") == expected + "。\n"


def test_full_width_punctuation_spaces_and_digits_are_kept_as_written():
    raw = "孔明曰：“亮（不才）第１次出山！”问：何故？答；否。ＡＢＣ　１２３"
    assert normalize_compat(raw) == raw
    assert clean_text(raw) == raw.replace("　", " ") + "\n"


def test_unicode_line_separators_break_lines():
    assert clean_text("玄德曰\u2028善。\u2029孔明笑。") == "玄德曰\n善。\n孔明笑。\n"


def test_table_rows_are_never_boilerplate_nor_unwrapped():
    rows = [f"{2000 + n} | {n * 10} | {n * 7}" for n in range(30)]
    prose = ["话说天下大势，分久必合，合久必分。周末七国分争，并入于秦。及秦灭之后，楚汉分争。"] * 3
    text = clean_text("\n".join(prose + rows + prose))
    assert [ln for ln in text.splitlines() if " | " in ln] == rows


NAMES = "黄忠 关羽 张飞 赵云 马超 魏延 姜维 庞德 徐晃 张辽".split()


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(
    "form", ["{i}. {name}率军{n}人出征，大胜而归。", "{i}、{name}于建安{n}年出征！", "（{i}）{name}曰：“{n}人足矣。”"]
)
def test_numbered_sentences_are_content_not_boilerplate(seed, form):
    import random

    rng = random.Random(seed)
    lines = [form.format(i=i, name=rng.choice(NAMES), n=100 * i) for i in range(1, 21)]
    report = CleanReport()
    assert clean_text("\n".join(lines), report).splitlines() == lines
    assert report.removed_lines == []


@pytest.mark.parametrize(("n", "unit"), [(30, "条"), (12, "则"), (45, "项")])
def test_repeats_that_would_drop_much_of_the_text_are_kept_and_logged(n, unit, caplog):
    # short numbered lines with no sentence end: alike but for digits, yet all of the document
    lines = [f"第{i}{unit} 诸葛亮在隆中{'躬耕陇亩' * (i % 3 + 1)}" for i in range(1, n + 1)]
    report = CleanReport()
    with caplog.at_level("WARNING", logger="ingest.cleaning"):
        text = clean_text("\n".join(lines), report)
    assert text.count("诸葛亮在隆中") == n
    assert report.removed_lines == [] and report.kept_repeats == n
    assert f"kept {n} repeating lines" in caplog.text


@pytest.mark.parametrize("furniture", ["- {p} -", "三国札记 第 {p} 页", "Page {p} of 40"])
def test_page_furniture_goes_and_numbered_paragraphs_stay(furniture, caplog):
    paras = [f"第{i}段：孔明于第{i}日登台祭风，众将肃立，良久不语" + "，风渐起" * (i % 4) for i in range(1, 61)]
    lines = ["三国札记"]
    for p, start in enumerate(range(0, 60, 6), start=1):
        lines += [*paras[start : start + 6], furniture.format(p=p)]
    report = CleanReport()
    with caplog.at_level("INFO", logger="ingest.cleaning"):
        text = clean_text("\n".join(lines), report)
    assert [ln for ln in text.splitlines() if ln.startswith("第")] == paras
    assert report.removed_lines == [furniture.format(p=p) for p in range(1, 11)]
    assert f"removed 10 lines ({report.removed_chars} characters)" in caplog.text


def test_long_repeating_lines_are_content():
    lines = [f"{i}. " + "赵云单骑救主，杀透重围，怀抱阿斗，血染征袍，长坂坡前七进七出无人能挡" * 2 for i in range(1, 6)]
    prose = ["话说天下大势，分久必合，合久必分。"] * 30
    assert clean_text("\n".join(prose + lines)).splitlines()[-5:] == lines


def test_corpus_update_lines_are_still_removed():
    report = CleanReport()
    text = clean_text(decode_bytes(shared_file("corpus", "sanguo_yanyi.txt").read_bytes())[0], report)
    assert "更新时间" not in text and "本章字数" not in text
    assert sum("更新时间" in ln for ln in report.removed_lines) == 120 and report.kept_repeats == 0
    assert {s.chapter for s in split_sections(text) if s.chapter} == set(range(1, 121))


def test_html_comments_and_scripts_a_web_copy_left_are_removed():
    raw = ("孔明长驱大进<!--script>认识，“我们对任何一个命题都可以说出相反的命题来”。主<script-->，必将割陇西。\n"
           "魏延领兵<SCRIPT type=\"text/javascript\">var a = 1;\n</script>出斜谷。\n关公曰：“<b>吾</b>去也。”\n")
    report = CleanReport()
    out = clean_text(raw, report)
    # other tags are the text's
    assert out == "孔明长驱大进，必将割陇西。\n魏延领兵出斜谷。\n关公曰：“<b>吾</b>去也。”\n"
    assert len(report.removed_lines) == 2 and report.removed_lines[0].startswith("<!--script>")
