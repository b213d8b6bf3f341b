"""Kinship mined from a text (ingest/kin.py) and the kin a question asks after."""

from __future__ import annotations

from ingest.kin import KinTable, mine_kin, spelled_question


def triples(text: str, names: set[str], groups: list[set[str]] | None = None) -> set[tuple[str, ...]]:
    return {tuple(t) for t in mine_kin(text, names, groups or [])}


def test_a_stated_relation_and_its_inverse_are_mined():
    found = triples("马腾之子马超，字孟起。", {"马腾", "马超"})
    assert found == {("马腾", "子", "马超"), ("马超", "父", "马腾")}
    # a son by his place is a son too, and the eldest
    assert ("袁绍", "长子", "袁谭") in triples("袁绍长子袁谭，出守青州。", {"袁绍", "袁谭"})


def test_a_given_name_alone_stands_for_the_person_named_before():
    text = "沛国谯郡人也，姓曹名操字孟德。操父曹嵩，本姓夏侯氏。"
    assert ("曹操", "父", "曹嵩") in triples(text, {"曹操", "曹嵩"})
    # a wife's name is no known name: the husband is the one the text named in full before
    text = "却说吕布在下邳。布妻严氏出曰：“将军勿出。”"
    assert ("吕布", "妻", "严氏") in triples(text, {"吕布", "陈宫"})
    # 天子, 公子: no given name
    assert triples("天子刘协在许都。公子刘琦拜见。", {"刘协", "刘琦", "天刘", "公刘"}) == set()


def test_blood_kin_share_a_surname_and_counting_words_are_no_people():
    assert triples("此乃刘玄德之弟关羽也。", {"刘玄德", "关羽"}) == set()  # a sworn brother
    assert triples("二叔侄二人同往。", {"二叔", "二人"}) == set()
    # a person's surname is any of their names' (孔明 of 诸葛亮)
    found = triples("原来孔明之子诸葛瞻，字思远。", {"孔明", "诸葛瞻"}, [{"诸葛亮", "孔明"}])
    assert ("孔明", "子", "诸葛瞻") in found and ("诸葛瞻", "父", "孔明") in found


def test_its_kin_are_those_of_the_last_one_named_of_the_kins_surname():
    text = "孔明曰：“操平生所虑者，乃西凉之兵也。今操杀马腾，其子马超现统西凉之众。”"
    assert ("马腾", "子", "马超") in triples(text, {"曹操", "马腾", "马超"})
    text = "济北相鲍信，寻思孙坚既为前部，怕他夺了头功，暗拨其弟鲍忠，先将马步军三千。"
    assert ("鲍信", "弟", "鲍忠") in triples(text, {"鲍信", "孙坚", "鲍忠"})
    # none of that surname named just before, a wife (no surname to go by), a "name" running on into the next word
    assert triples("孙坚既为前部。其弟鲍忠先行。", {"孙坚", "鲍忠"}) == set()
    assert triples("鲍信在此。" + "。" * 80 + "其弟鲍忠先行。", {"鲍信", "鲍忠"}) == set()  # named too far before
    assert triples("袁绍回冀州，不理政事。其妻刘氏劝立后嗣。", {"袁绍", "冀州", "刘氏"}) == set()
    assert triples("令糜竺与其弟糜芳守护中军。", {"糜竺", "糜芳守"}) == set()


def test_a_daughter_is_no_son_and_a_title_is_no_one():
    found = triples("伏皇后父伏完，为辅国将军。", {"伏皇后", "伏完"})
    assert found == {("伏皇后", "父", "伏完"), ("伏完", "女", "伏皇后")}
    assert triples("袁将军妻刘氏出曰：“勿忧。”", {"袁将军", "刘氏"}) == set()
    # two sons each called the eldest (操长子曹昂 … 立长子曹丕): neither is his brothers' elder brother
    text = "曹操长子曹昂战死。曹操之子曹植能文。后曹操立长子曹丕为世子。"
    assert not any(rel == "兄" for _, rel, _ in triples(text, {"曹操", "曹昂", "曹植", "曹丕"}))


def test_sons_named_by_given_name_after_the_father_and_adopted_sons():
    text = "却说孙坚有四子，皆吴夫人所生：长子名策，字伯符；次子名权，字仲谋。"
    found = triples(text, {"孙坚", "孙策", "孙权"})
    assert {("孙坚", "长子", "孙策"), ("孙坚", "次子", "孙权"), ("孙权", "父", "孙坚")} <= found
    assert ("孙权", "兄", "孙策") in found  # the eldest son is his brothers' elder brother
    assert ("关公", "子", "关平") in triples("关定大喜，便命关平拜关公为父。", {"关公"})
    # a son the tagger did not take for a name: his place, his father's surname, and the text names him again
    sons = triples("忽报镇南将军赵云长子赵统、次子赵广来见。封赵统为虎贲中郎。", {"赵云"})
    assert ("赵云", "长子", "赵统") in sons and not any(t[2].startswith("赵广") for t in sons)  # 赵广: named once


def test_the_kin_a_question_asks_after():
    table = KinTable([["曹操", "父", "曹嵩"], ["袁绍", "长子", "袁谭"], ["袁绍", "子", "袁谭"], ["袁绍", "子", "袁尚"]],
                     [{"曹操", "孟德"}])  # fmt: skip
    assert table.relatives("曹操的父亲叫什么？") == ["曹嵩"]
    assert table.relatives("孟德的爸爸是谁") == ["曹嵩"]  # by another of his names, as people say it
    assert table.relatives("曹操的儿子是谁？") == [] and table.relatives("曹嵩是谁？") == []
    assert table.relatives("袁绍的儿子有哪些？") == ["袁谭", "袁尚"]
    assert table.relatives("袁绍的长子是谁？") == ["袁谭"]  # the eldest, not every son
    assert len(KinTable()) == 0 and KinTable().relatives("曹操的父亲叫什么？") == []


def test_the_kin_word_a_relative_stands_for_leaves_the_query():
    table = KinTable([["诸葛亮", "兄", "诸葛瑾"]])
    # the novel says 兄; 哥哥 in its dialogue is anyone's brother, and no word forms across the gap (亮是)
    assert table.resolve("诸葛亮的哥哥是谁？") == (["诸葛瑾"], "诸葛亮 是谁？")
    assert table.resolve("诸葛亮的母亲是谁？") == ([], "诸葛亮的母亲是谁？")  # none stated: the words stay


def test_a_kin_character_inside_a_word_asks_after_no_kin():
    table = KinTable([["关羽", "父", "关定"], ["曹操", "父", "曹嵩"]])
    assert table.relatives("关羽父子是怎么死的？") == []  # 父子: father and son, not 关羽's father
    assert table.relatives("曹操父是谁？") == ["曹嵩"] == table.relatives("曹操之父，名叫什么？")


def test_sons_listed_after_the_first_have_his_father():
    found = triples("却说司马懿在宛城。懿长子司马师，次子司马昭，二人素有大志。", {"司马懿", "司马师", "司马昭"})
    assert {("司马懿", "次子", "司马昭"), ("司马昭", "父", "司马懿"), ("司马昭", "兄", "司马师")} <= found
    # a son by his place told far from any father is no one's
    assert triples("司马懿在宛城。" + "。" * 60 + "乃次子司马昭出。", {"司马懿", "司马昭"}) == set()


def test_a_question_in_latin_letters_asks_in_the_chinese_it_translates_to():
    # Who was Cao Cao's father? -> the names it spells and the words CC-CEDICT gives: 曹操 父 父亲
    assert spelled_question(["曹操", "父", "父亲"], {"曹操", "曹嵩"}) == "曹操的父亲"
    assert spelled_question(["曹操", "曹嵩", "父亲"], {"曹操", "曹嵩"}) == ""  # two people: whose father?
    assert spelled_question(["曹操", "兵"], {"曹操"}) == ""


def test_a_brothers_son_and_kin_words_as_people_say_them():
    assert ("马腾", "侄", "马岱") in triples("马腾兄子马岱谏曰：“叔父若往，恐遭其害。”", {"马腾", "马岱"})
    table = KinTable([["马超", "父", "马腾"], ["曹操", "子", "曹丕"], ["曹操", "子", "曹植"], ["刘备", "子", "寇封"]])
    assert table.relatives("马超的老爹是谁？") == ["马腾"]
    assert table.relatives("曹操的孩子有哪些？") == ["曹丕", "曹植"] and table.relatives("刘备的养子是谁？") == ["寇封"]
