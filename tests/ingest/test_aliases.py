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


def test_a_courtesy_name_changed_later_is_mined():
    # 长生 is too rare to count; 云长, the courtesy name he changed to, names him
    text = "吾姓关名羽，字长生，后改云长，河东解良人也。" + "关羽出马。" * 3 + "云长大怒。" * 3 + "关云长提刀。" * 2
    assert mine_aliases(text) == [["云长", "关云长", "关羽"]]
    both = text + "长生" * 3
    assert mine_aliases(both) == [sorted(["云长", "长生", "关云长", "关羽"])]
    changed = "姓张名某，字公甲，改字公乙。" + ("张某" + "公甲" + "公乙") * 3
    assert mine_aliases(changed) == [["公乙", "公甲", "张某"]]


def test_a_given_name_changed_later_takes_the_courtesy_name():
    text = "逊本名陆议，后改名逊，字伯言，乃吴郡吴人。" + "陆逊" * 3 + "伯言" * 3 + "陆伯言" * 2
    assert mine_aliases(text) == [["伯言", "陆伯言", "陆逊"]]


def test_surname_honorific_is_mined_when_it_stands_beside_the_person():
    intro = "姓关名羽，字云长。" + "关羽" * 3 + "云长" * 3
    beside = "云长提刀上马，关公斩之。" * 3
    assert mine_aliases(intro + beside) == [["云长", "关公", "关羽"]]
    # an honorific used far from any of the person's names (周公, the Duke of Zhou) is someone else
    far = "。" * 200
    duke = "姓周名瑜，字公瑾。" + "周瑜" * 3 + "公瑾" * 3 + (far + "昔周公吐哺" + far) * 3
    assert mine_aliases(duke) == [["公瑾", "周瑜"]]
    # ... and so is one the person shares with another mined person of the same surname (曹公: 曹操 or 曹仁?)
    two = ("姓曹名操，字孟德。" + "曹操孟德" * 3 + "姓曹名仁，字子孝。" + "曹仁子孝" * 3 + "孟德谓曹公曰子孝" * 3)
    assert all("曹公" not in g for g in mine_aliases(two))
    # a use that is the start of a mined name (周公瑾) is no use of the honorific
    own = "姓周名瑜，字公瑾。" + "周瑜" * 3 + "周公瑾" * 4
    assert mine_aliases(own) == [["公瑾", "周公瑾", "周瑜"]]


def test_a_person_the_text_introduces_is_a_name_whatever_the_tagger_says():
    from ingest.entities import mine_entities

    text = ("乃陈留人，姓典，名韦。" + "典韦挺戟而出。" * 2 + "把关将姓孔，名秀，引五百军兵。孔秀出关。"
            + "姓张，名三，不曾再见。")  # 张三 is introduced but never named again: not a name the text uses
    names = mine_entities(text)
    assert "典韦" in names and "孔秀" in names and "张三" not in names
