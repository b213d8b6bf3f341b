"""Alpaca, ShareGPT and OpenAI-messages files: round trips, and one problem per bad record with its line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.data.formats import Conversation, DataError, detect_format, read, read_with_format, write

CONVS = [
    Conversation.pair("先生何以教我？", "将军欲成霸业，北让曹操占天时，南让孙权占地利。"),
    Conversation(
        [
            {"role": "user", "content": "借箭几日可成？"},
            {"role": "assistant", "content": "只须三日。"},
            {"role": "user", "content": "军中无戏言。"},
            {"role": "assistant", "content": "愿纳军令状：三日不办，甘当重罚。\n第二行也要保留。"},
        ],
        system="你是诸葛亮，字孔明。",
    ),
]


def _lines(path: Path, records: list[object]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records) + "\n")
    return path


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
@pytest.mark.parametrize("fmt", ["alpaca", "sharegpt", "openai"])
def test_every_format_round_trips_turns_and_system(tmp_path, fmt, suffix):
    path = tmp_path / f"data{suffix}"
    assert write(path, CONVS, fmt) == 2
    back, problems, detected = read_with_format(path)
    assert problems == []
    assert detected == fmt
    assert [(c.system, c.messages) for c in back] == [(c.system, c.messages) for c in CONVS]


@pytest.mark.parametrize("src", ["alpaca", "sharegpt", "openai"])
@pytest.mark.parametrize("dst", ["alpaca", "sharegpt", "openai"])
def test_conversion_between_formats_keeps_conversations(tmp_path, src, dst):
    write(tmp_path / "a.jsonl", CONVS, src)
    first, _ = read(tmp_path / "a.jsonl")
    write(tmp_path / "b.json", first, dst)
    second, problems = read(tmp_path / "b.json", dst)
    assert problems == []
    assert [(c.system, c.messages) for c in second] == [(c.system, c.messages) for c in CONVS]


def test_meta_is_written_only_when_asked(tmp_path):
    conv = Conversation.pair("问", "答", chapter=38, alias="孔明")
    write(tmp_path / "plain.jsonl", [conv], "openai")
    write(tmp_path / "meta.jsonl", [conv], "openai", meta=True)
    assert "meta" not in json.loads((tmp_path / "plain.jsonl").read_text())
    back, _ = read(tmp_path / "meta.jsonl")
    assert back[0].meta["chapter"] == 38 and back[0].meta["alias"] == "孔明"


def test_alpaca_input_history_and_system(tmp_path):
    rec = {
        "instruction": "请评价此人",
        "input": "曹操",
        "output": "治世之能臣，乱世之奸雄也。",
        "system": "你是许劭。",
        "history": [["先生善相人乎？", "略知一二。"]],
    }
    (conv,), problems = read(_lines(tmp_path / "a.jsonl", [rec]))
    assert problems == []
    assert conv.system == "你是许劭。"
    assert [m["role"] for m in conv.messages] == ["user", "assistant", "user", "assistant"]
    assert conv.messages[2]["content"] == "请评价此人\n曹操"


def test_sharegpt_roles_system_turn_and_tools(tmp_path):
    rec = {
        "conversations": [
            {"from": "system", "value": "你是孔明。"},
            {"from": "human", "value": "东风何时起？"},
            {"from": "gpt", "value": "甲子日。"},
        ],
        "tools": '[{"name": "weather"}]',
    }
    (conv,), problems = read(_lines(tmp_path / "s.jsonl", [rec]))
    assert problems == []
    assert conv.system == "你是孔明。"
    assert conv.meta["tools"] == '[{"name": "weather"}]'
    write(tmp_path / "out.jsonl", [conv], "sharegpt")
    assert json.loads((tmp_path / "out.jsonl").read_text())["tools"] == '[{"name": "weather"}]'


def test_openai_text_content_parts_are_joined(tmp_path):
    rec = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "借东"}, {"type": "text", "text": "风"}]},
            {"role": "assistant", "content": "可也。"},
        ]
    }
    (conv,), _ = read(_lines(tmp_path / "o.jsonl", [rec]))
    assert conv.messages[0]["content"] == "借东风"


def test_every_bad_jsonl_record_is_reported_with_its_line_and_the_rest_are_read(tmp_path):
    ok = {"messages": [{"role": "user", "content": "问"}, {"role": "assistant", "content": "答"}]}
    records: list[object] = [
        ok,  # 1
        '{"messages": [',  # 2 malformed JSON
        {"messages": [{"role": "user", "content": "问"}]},  # 3 ends with the user
        {"messages": [{"role": "assistant", "content": "答"}, {"role": "user", "content": "问"}]},  # 4
        {"messages": [{"role": "user", "content": "问"}, {"role": "assistant", "content": "  "}]},  # 5 empty
        {
            "messages": [
                {"role": "user", "content": "问"},
                {"role": "user", "content": "又问"},
                {"role": "assistant", "content": "答"},
            ]
        },  # 6 not alternating
        {"messages": [{"role": "narrator", "content": "话说"}, {"role": "assistant", "content": "答"}]},  # 7
        {"messages": [{"role": "user", "content": "问"}, {"role": "tool", "content": "{}"}]},  # 8 tool turn
        ["not", "an", "object"],  # 9
        {"foo": 1},  # 10 missing messages
        ok,  # 11
    ]
    convs, problems = read(_lines(tmp_path / "bad.jsonl", records), "openai")
    assert len(convs) == 2
    assert [c.meta["source"] for c in convs] == ["bad.jsonl:1", "bad.jsonl:11"]
    by_line = {p.line: p.message for p in problems}
    assert sorted(by_line) == list(range(2, 11))
    assert "malformed JSON" in by_line[2]
    assert "nothing for the assistant to learn" in by_line[3]
    assert "must start with the user" in by_line[4]
    assert "empty content" in by_line[5]
    assert "must alternate" in by_line[6]
    assert "'narrator'" in by_line[7]
    assert "tool" in by_line[8]
    assert "JSON object" in by_line[9]
    assert "missing field 'messages'" in by_line[10]
    assert str(problems[0]).startswith(f"{tmp_path / 'bad.jsonl'}: line 2: ")


def test_alpaca_problems(tmp_path):
    records: list[object] = [
        {"instruction": "问", "input": "", "output": "答"},
        {"instruction": "问", "input": ""},
        {"instruction": "", "input": "", "output": "答"},
        {"instruction": "问", "output": ""},
        {"instruction": "问", "output": 3},
        {"instruction": "问", "output": "答", "history": [["只有问"]]},
        {"instruction": "问", "output": "答", "system": ""},  # an empty system field is common and harmless
    ]
    convs, problems = read(_lines(tmp_path / "a.jsonl", records), "alpaca")
    assert len(convs) == 2 and convs[1].system is None
    messages = [p.message for p in problems]
    assert [p.line for p in problems] == [2, 3, 4, 5, 6]
    assert "missing field 'output'" in messages[0]
    assert "both empty" in messages[1]
    assert "'output' is empty" in messages[2]
    assert "must be a string" in messages[3]
    assert "history[0]" in messages[4]


def test_json_array_problems_carry_index_and_line(tmp_path):
    good = {"instruction": "问", "output": "答"}
    path = tmp_path / "arr.json"
    path.write_text(json.dumps([good, {"instruction": "问"}, good, {"instruction": "再问"}], indent=2))
    convs, problems = read(path)
    assert len(convs) == 2
    assert [(p.index, p.line) for p in problems] == [(1, 6), (3, 13)]
    assert "(index 1)" in str(problems[0])
    text = path.read_text().splitlines()
    assert text[5].strip() == "{" and text[12].strip() == "{"


def test_malformed_json_array_reports_where_reading_stopped(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[\n  {"instruction": "问", "output": "答"},\n  {"instruction": "问", "output": \n]\n')
    convs, problems = read(path, "alpaca")
    assert len(convs) == 1
    assert len(problems) == 1 and problems[0].line == 4 and problems[0].index == 1
    assert "records after it not read" in problems[0].message


def test_detect_format_and_file_errors(tmp_path):
    assert detect_format([{"messages": []}, {"instruction": "x"}, {"messages": []}]) == "openai"
    assert detect_format([None, {"conversations": []}]) == "sharegpt"
    with pytest.raises(DataError, match="--from"):
        read(_lines(tmp_path / "x.jsonl", [{"text": "no format"}]))
    with pytest.raises(DataError, match="no such file"):
        read(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="empty"):
        read(tmp_path / "empty.jsonl")


def test_gbk_encoded_file_is_read(tmp_path):
    path = tmp_path / "gbk.jsonl"
    record = {"instruction": "丞相安好？", "output": "吾甚好，多谢挂念。"}
    path.write_bytes((json.dumps(record, ensure_ascii=False) + "\n").encode("gbk"))
    (conv,), problems = read(path)
    assert problems == [] and conv.messages[1]["content"] == "吾甚好，多谢挂念。"


def test_sharegpt_wrong_roles_and_missing_fields_are_reported_per_line(tmp_path):
    def turns(*pairs: tuple[str, object]) -> dict[str, object]:
        return {"conversations": [{"from": f, "value": v} for f, v in pairs]}

    records: list[object] = [
        turns(("human", "问"), ("gpt", "答")),  # 1
        turns(("human", "问"), ("bot", "答")),  # 2 unknown role
        turns(("gpt", "答"), ("human", "问")),  # 3 starts with the assistant
        turns(("human", "问"), ("gpt", "答"), ("system", "迟到的系统提示")),  # 4 system turn not first
        {"conversations": [{"value": "无人说"}, {"from": "gpt", "value": "答"}]},  # 5 no speaker
        {"conversations": [{"from": "human"}, {"from": "gpt", "value": "答"}]},  # 6 no text
        turns(("human", "问"), ("gpt", 42)),  # 7 text of the wrong type
        {"conversations": "问答"},  # 8 not a list
        turns(("human", "问"), ("function_call", "{}")),  # 9 a tool turn
        '{"conversations": [{"from": "human", "value": "问"}, {"from": "gpt", "val',  # 10 cut short by a kill
    ]
    convs, problems = read(_lines(tmp_path / "s.jsonl", records), "sharegpt")
    assert len(convs) == 1
    by_line = {p.line: p.message for p in problems}
    assert sorted(by_line) == list(range(2, 11))
    assert "unknown role 'bot'" in by_line[2]
    assert "must start with the user" in by_line[3]
    assert "only the first turn may be" in by_line[4]
    assert "turn 1 has no 'from'" in by_line[5]
    assert "missing field 'turns[1].value'" in by_line[6]
    assert "must be a string, not int" in by_line[7]
    assert "must be a list" in by_line[8]
    assert "tool turn" in by_line[9]
    assert "malformed JSON" in by_line[10]


def test_validate_and_convert_print_each_bad_line_and_keep_the_rest(tmp_path, capsys):
    from finetune.cli import EXIT_FAILED, main

    ok = {"messages": [{"role": "user", "content": "问"}, {"role": "assistant", "content": "答"}]}
    src = _lines(tmp_path / "d.jsonl", [
        ok,
        {"messages": [{"role": "user", "content": "问"}, {"role": "bot", "content": "答"}]},
        {"messages": [{"role": "user"}, {"role": "assistant", "content": "答"}]},
        "not json at all",
        ok,
    ])  # fmt: skip
    assert main(["data", "validate", str(src)]) == EXIT_FAILED
    out = capsys.readouterr()
    assert out.out.strip() == f"{src}: 2 valid openai records, 3 skipped (see above)"
    lines = out.err.strip().splitlines()
    assert [line.split(": ")[2] for line in lines] == ["line 2", "line 3", "line 4"]
    assert all(line.startswith(f"skipped: {src}: line ") for line in lines)
    assert "role 'bot'" in lines[0] and "missing field 'messages[1].content'" in lines[1]
    assert "malformed JSON" in lines[2]
    dst = tmp_path / "a.json"
    assert main(["data", "convert", str(src), "--to", "alpaca", "--out", str(dst)]) == EXIT_FAILED
    assert "wrote 2 conversations" in capsys.readouterr().out
    assert len(json.loads(dst.read_text(encoding="utf-8"))) == 2


@pytest.mark.parametrize(("text", "says"), [
    ("not json\n", "no line is a JSON record (line 1: malformed JSON"),
    ("[]", "no records: the file is empty"),
    ('{"x": 1}\n', "cannot tell the format: no record has"),
])
def test_a_file_in_no_format_says_why(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as err:
        read(path)
    assert says in str(err.value)
