"""Persona extraction from prose: speaker tags, nested and multi-paragraph quotes, ambiguous aliases."""

from __future__ import annotations

import json
import time

import pytest

from finetune.data.aliases import AliasRule, load_overrides, resolve_rules
from finetune.data.extract import ExtractReport, extract_pairs, extract_to_dir, read_novel
from finetune.data.formats import DataError, read
from finetune.data.speech import find_quotes, utterances

from ..conftest import shared_file

ALIASES = ["孔明", "亮", "卧龙", "军师", "丞相"]


@pytest.fixture
def pairs(small_novel):
    text, _ = read_novel(small_novel)
    report = ExtractReport("诸葛亮", ALIASES)
    convs = extract_pairs(text, "诸葛亮", ALIASES, report=report)
    return convs, report


def _reply(convs, start: str):
    found = [c for c in convs if c.messages[1]["content"].startswith(start)]
    assert len(found) == 1, [c.messages[1]["content"] for c in convs]
    return found[0]


def test_quotes_nested_and_continued_over_paragraphs():
    text = "甲曰：“他说‘可’，又说“好”。”乙曰：“一。\n“二。”\n丙曰：“未完"
    quotes = find_quotes(text)
    assert [q.text for q in quotes] == ["他说‘可’，又说“好”。", "一。\n二。", "未完"]
    assert text[quotes[0].end - 1] == "”"


def test_speaker_tags():
    text = "玄德问孔明曰：“何如？”答曰：“可也。”孔明见其意甚诚，乃曰：“愿往。”又曰：“即行。”"
    text += "孔明欲斩云长，玄德曰：“不可。”孔明唤入问之，答曰：“小人乃军士。”"
    got = [(u.subject, u.inherited) for u in utterances(text)]
    assert got == [
        ("玄德问孔明曰", False),
        ("孔明", False),  # 答曰: the one asked answers
        ("孔明见其意甚诚", False),  # 乃曰 has no subject of its own
        ("又曰", True),  # same speaker as the quote just closed
        ("玄德曰", False),
        ("答曰", False),  # the one called in answers, not 孔明 who asked
    ]


def test_reply_to_a_question_is_paired_with_the_question(pairs):
    convs, _ = pairs
    conv = _reply(convs, "自董卓造逆以来")
    assert conv.messages[0]["content"].startswith("备久慕先生大名")
    assert conv.meta | {"offset": 0} == conv.meta | {
        "chapter": 38,
        "chapter_title": "定三分隆中决策",
        "alias": "孔明",
        "prompt": "speech",
        "prompt_intro": "玄德曰",
        "offset": 0,
    }
    # the whole speech, over several sentences
    assert conv.messages[1]["content"].endswith("非惟天时，抑亦人谋也。将军欲成霸业，可先取荆州为家，后取西川建基业！")


def test_nested_quotes_and_subjectless_tag(pairs):
    conv = _reply(pairs[0], "家兄尝言")
    assert conv.messages[1]["content"] == "家兄尝言：‘良禽相木而栖，贤臣择主而事。’亮愿效犬马之劳。"
    assert conv.meta["intro"] == "孔明见其意甚诚，乃曰"
    assert conv.messages[0]["content"] == "先生之言，顿开茅塞。"


def test_continuations_join_into_one_reply(pairs):
    conv = _reply(pairs[0], "为将而不通天文")
    assert conv.messages[1]["content"] == "为将而不通天文，是庸才也。亮于三日前已算定今日有大雾，因此敢任三日之限。"
    assert conv.messages[0]["content"] == "先生真神人也！何以知今日如此大雾？"


def test_speech_over_two_paragraphs_and_narration_prompt(pairs):
    conv = _reply(pairs[0], "第一件事")
    assert conv.messages[1]["content"] == "第一件事，须先安民。\n第二件事，须整顿军马。"
    assert conv.meta["prompt"] == "narration"
    assert conv.messages[0]["content"] == "孔明传令已毕，众将分头而去。"


def test_answer_is_attributed_to_the_one_asked(pairs):
    conv = _reply(pairs[0], "此危计也")
    assert conv.messages[0]["content"] == "丞相何以不从子午谷出兵？"


def test_ambiguous_aliases_need_evidence(pairs):
    convs, report = pairs
    replies = [c.messages[1]["content"] for c in convs]
    # 丞相 is 曹操 in chapter 46 and 吴主孙亮 says 亮曰 in chapter 113: neither is 孔明
    assert not any(r.startswith(("重雾迷江", "孙綝专权")) for r in replies)
    # 丞相 in chapter 91, with 孔明 in the narration just before, is 孔明
    assert _reply(convs, "吾今北伐").meta["alias"] == "丞相"
    assert report.rejected == {"丞相: outside chapters 80-104": 1, "亮: nearer to 孙亮": 1}
    assert report.pairs_per_alias == {"孔明": 6, "丞相": 1}
    assert report.pairs == len(convs) == 7


def test_scene_change_breaks_the_question_reply_link(pairs):
    conv = _reply(pairs[0], "每船上箭约五六千矣")
    assert conv.meta["prompt"] == "narration"  # not 曹操's 重雾迷江 from the other camp
    assert conv.messages[0]["content"] == "孔明令船队急回，二十只船两边束草上排满箭枝。"


def test_overrides_change_the_rules(tmp_path, small_novel):
    table = tmp_path / "aliases.json"
    table.write_text(json.dumps({"丞相": None, "亮": {"chapters": [100, 120], "window": 50}}), encoding="utf-8")
    overrides = load_overrides(table)
    rules = resolve_rules("诸葛亮", ALIASES, overrides)
    assert "丞相" not in rules and rules["亮"] == AliasRule(chapters=(100, 120), window=50)
    text, _ = read_novel(small_novel)
    convs = extract_pairs(text, "诸葛亮", ALIASES, overrides)
    # with 丞相 declared unambiguous, 曹操's line is (wrongly, as asked) taken as 孔明's
    assert any(c.messages[1]["content"].startswith("重雾迷江") for c in convs)


def test_bad_alias_tables_name_the_problem(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"丞相": {"chapter": [1, 2]}}', encoding="utf-8")
    with pytest.raises(DataError, match="unknown keys"):
        load_overrides(bad)
    bad.write_text('{"丞相": {"chapters": [1]}}', encoding="utf-8")
    with pytest.raises(DataError, match="first, last"):
        load_overrides(bad)


def test_generic_rules_for_other_characters():
    rules = resolve_rules("刘备", ["玄德", "备", "主公", "先主"])
    assert set(rules) == {"备", "主公"}


def test_context_goes_into_the_user_turn(small_novel):
    text, _ = read_novel(small_novel)
    convs = extract_pairs(text, "诸葛亮", ALIASES, context=True)
    conv = _reply(convs, "自董卓造逆以来")
    assert conv.messages[0]["content"].startswith("（第38回 定三分隆中决策）玄德曰：“备久慕先生大名")


def test_extract_to_dir_writes_pairs_sample_and_report(tmp_path, small_novel):
    out = tmp_path / "out"
    report = extract_to_dir(small_novel, "诸葛亮", ALIASES, out, sample_size=3, seed=1)
    convs, problems = read(out / "pairs.jsonl")
    assert problems == [] and len(convs) == report.pairs == 7
    assert convs[0].meta["chapter"] == 38 and convs[0].meta["source"] == small_novel.name
    sample = (out / "sample.md").read_text(encoding="utf-8")
    assert sample.count("\n## ") == 3 and "**诸葛亮**" in sample
    saved = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert saved["pairs_per_alias"] == {"孔明": 6, "丞相": 1}
    assert saved["ambiguous_alias_rules"]["丞相"]["chapters"] == [80, 104]
    again = tmp_path / "again"
    extract_to_dir(small_novel, "诸葛亮", ALIASES, again, sample_size=3, seed=1)
    assert (again / "sample.md").read_text(encoding="utf-8") == sample


def test_zhuge_liang_from_sanguo_yanyi(tmp_path):
    novel = shared_file("corpus", "sanguo_yanyi.txt")
    start = time.perf_counter()
    report = extract_to_dir(novel, "诸葛亮", ALIASES, tmp_path / "zg")
    assert time.perf_counter() - start < 10
    # measured: 550 pairs (孔明 547, 亮 3: his talk with 诸葛瑾 in ch. 66); 7 亮曰 of 吴主孙亮 rejected
    assert report.pairs >= 450
    assert report.pairs_per_alias["孔明"] >= 440
    assert report.pairs_per_alias["亮"] <= 10
    assert report.rejected["亮: nearer to 孙亮"] >= 5
    assert report.prompts["speech"] > report.prompts["narration"]
    convs, _ = read(tmp_path / "zg" / "pairs.jsonl")
    assert all(c.meta["chapter"] <= 104 for c in convs)  # 孔明 dies in chapter 104
    assert all(c.meta["chapter"] == 66 for c in convs if c.meta["alias"] == "亮")
    # 玄德's 且勿惊动 (said to the boy) and a lapse of 一个时辰 before the poem: not a prompt for it
    assert not [c for c in convs if c.messages[1]["content"].startswith("大梦谁先觉")]
    assert report.weak["a fragment after a scene change"] >= 5


def test_gbk_copy_of_the_novel_gives_the_same_pairs(tmp_path):
    utf8 = shared_file("corpus", "sanguo_yanyi.txt")
    gbk = shared_file("corpus", "sanguo_yanyi.gbk.txt")
    a = extract_to_dir(utf8, "诸葛亮", ALIASES, tmp_path / "a")
    b = extract_to_dir(gbk, "诸葛亮", ALIASES, tmp_path / "b")
    assert b.encoding == "gb18030" and a.encoding == "utf-8"
    assert a.pairs_per_alias == b.pairs_per_alias


def _pairs_of(paragraph: str) -> tuple[list[tuple[str, str]], ExtractReport]:
    report = ExtractReport("诸葛亮", ["孔明"])
    convs = extract_pairs(f"第九十回 测试\n　　{paragraph}\n", "诸葛亮", ["孔明"], report=report)
    return [(c.messages[0]["content"], c.messages[1]["content"]) for c in convs], report


def test_a_line_said_to_someone_else_is_not_his_prompt():
    pairs, report = _pairs_of("众将只得奉诏。懿暗谓辛毗曰：“公真知我心也！”孔明笑曰：“此乃司马懿安三军之法也。”")
    assert pairs == [] and report.no_prompt == 1  # no narration between: left out, not paired with 懿's words
    pairs, _ = _pairs_of("懿暗谓辛毗曰：“公真知我心也！”蜀将闻知。孔明笑曰：“此乃司马懿安三军之法也。”")
    assert pairs == [("蜀将闻知。", "此乃司马懿安三军之法也。")]
    asked, _ = _pairs_of("魏延问孔明曰：“何不出子午谷？”孔明曰：“此危计也。”")
    assert asked == [("何不出子午谷？", "此危计也。")]  # said to him: his prompt


def test_a_line_relayed_after_a_scene_change_is_not_his_prompt():
    pairs, _ = _pairs_of("权笑曰：“若一朝无孔明，彼必为祸。”祎曰：“臣今归去，即当以此言告孔明。”"
                         "遂拜辞孙权，回到祁山，具言吴主起兵。孔明问曰：“吴主别有所言否？”")  # fmt: skip
    assert pairs == [("遂拜辞孙权，回到祁山，具言吴主起兵。", "吴主别有所言否？")]


def test_narration_fragments_and_continuations_are_left_out():
    pairs, report = _pairs_of("玄德曰：“吾不忍取同宗之地。”遂辞出。回至馆驿，孔明曰：“景升欲以荆州付主公，奈何却之？”")
    assert pairs == [] and report.weak["a fragment after a scene change"] == 1
    pairs, report = _pairs_of("姜维问曰：“丞相何以教我？”孔明曰：“吾有书二十四篇，今尽付汝。”维哭拜而受。"
                              "孔明又曰：“吾有连弩之法，汝可依法造用。”")  # fmt: skip
    assert pairs == [("丞相何以教我？", "吾有书二十四篇，今尽付汝。")]
    assert report.weak["goes on from the character's own line"] == 1
    kept, _ = _pairs_of("孔明曰：“汝可去。”玄德问其意。孔明曰：“但看东南风起，亮必还矣。”")  # a reported question
    assert kept[-1] == ("玄德问其意。", "但看东南风起，亮必还矣。")


def test_verse_and_recitation_are_not_a_dialogue():
    pairs, _ = _pairs_of("两军对阵。后人有诗赞孔明曰：“轻摇三寸舌，骂死老奸臣。”孔明以扇指曹真曰：“来日决战。”")
    assert [p for p, _ in pairs] != ["轻摇三寸舌，骂死老奸臣。"]
    pairs, _ = _pairs_of("童子欲报。玄德曰：“且勿惊动。”孔明翻身起，口吟诗曰：“大梦谁先觉？平生我自知。”")
    assert [p for p, _ in pairs] != ["且勿惊动。"]
