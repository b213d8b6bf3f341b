from ingest.aliases import AliasTable, load_alias_file, mine_aliases
from ingest.cleaning import clean_text


def test_mines_name_and_courtesy_name_groups(novel_text):
    text = clean_text(novel_text) * 2  # names must recur to count
    groups = {frozenset(g) for g in mine_aliases(text, min_count=2)}
    assert groups == {
        frozenset({"刘备", "玄德"}),
        frozenset({"张飞", "翼德"}),
        frozenset({"关羽", "云长"}),
        frozenset({"诸葛亮", "孔明"}),
    }


def test_phrases_that_look_like_names_are_not_mined():
    text = "五百校刀手一字摆开。" * 5 + "手一" * 10 + "摆开" * 10 + "年二十四，字正平。" * 5 + "正平" * 10
    assert mine_aliases(text) == []


def test_shared_courtesy_name_is_dropped_not_merged():
    text = ("姓徐名晃，字公明。" + "徐晃" * 5 + "公明" * 5) + ("姓管名辂，字公明。" + "管辂" * 5) + "徐公明管公明" * 3
    groups = mine_aliases(text)
    assert all("公明" not in g for g in groups)
    assert ["徐公明", "徐晃"] in groups and ["管公明", "管辂"] in groups


def test_table_merges_groups_and_expands_queries(tmp_path):
    f = tmp_path / "aliases.txt"
    f.write_text("诸葛亮 孔明 卧龙  # 蜀汉丞相\n关羽、云长、关公\n孔明=诸葛孔明\n", encoding="utf-8")
    table = load_alias_file(f)
    assert sorted(map(sorted, table.groups)) == [["云长", "关公", "关羽"], ["卧龙", "孔明", "诸葛亮", "诸葛孔明"]]
    assert table.expansions("卧龙先生在哪里借东风") == ["孔明", "诸葛亮", "诸葛孔明"]
    # the longest name wins: 诸葛孔明 is not also read as 孔明
    assert table.find("诸葛孔明与关公") == ["诸葛孔明", "关公"]
    assert AliasTable().expansions("孔明") == []
