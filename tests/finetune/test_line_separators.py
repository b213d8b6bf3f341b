"""Records whose strings hold characters that str.splitlines() takes for line ends (U+2028, U+2029, \\x85, \\x0b,
\\x0c, \\x1c-\\x1e) are read whole, line numbers stay right, and `data convert` output passes `data validate`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.cli import EXIT_FAILED, EXIT_OK, main
from finetune.data.formats import read
from finetune.training.runio import append_metric, read_metrics

from ..ingest.fieldcases import field_case

# what str.splitlines() splits at besides \n and \r
SEPARATORS = ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]


def _raw(record: dict[str, object], sep: str) -> str:
    """One JSON line with `sep` raw inside its strings, as a writer that does not escape it leaves it."""
    escaped = json.dumps(sep)[1:-1]  # json.dumps escapes the control characters (\\u000b), not U+2028 or \\x85
    return json.dumps(record, ensure_ascii=False).replace(escaped, sep)


@pytest.mark.parametrize("sep", SEPARATORS, ids=[f"U+{ord(s):04X}" for s in SEPARATORS])
def test_jsonl_record_holding_a_separator_is_read_whole_with_right_line_numbers(tmp_path: Path, sep: str):
    first = {"instruction": f"先生何以知{sep}东风将至？", "input": "", "output": "亮自幼习天文。"}
    second = {"instruction": "丞相以为如何？", "input": "", "output": f"此战可胜，{sep}不必忧虑。{sep}{sep}"}
    last = {"instruction": "再问", "input": "", "output": f"再答{sep}"}
    path = tmp_path / "d.jsonl"
    text = "\n".join([_raw(first, sep), _raw(second, sep), '{"instruction": "cut short', _raw(last, sep)]) + "\n"
    path.write_bytes(text.encode("utf-8"))
    convs, problems = read(path)
    assert [c.messages[0]["content"] for c in convs] == [first["instruction"], "丞相以为如何？", "再问"]
    assert [c.messages[1]["content"] for c in convs] == [first["output"], second["output"], last["output"]]
    assert [c.meta["source"] for c in convs] == ["d.jsonl:1", "d.jsonl:2", "d.jsonl:4"]
    assert [(p.line, "malformed JSON" in p.message) for p in problems] == [(3, True)]


@pytest.mark.parametrize("sep", SEPARATORS, ids=[f"U+{ord(s):04X}" for s in SEPARATORS])
def test_json_array_lines_count_newlines_only(tmp_path: Path, sep: str):
    good = {"instruction": f"问{sep}问", "output": f"答{sep}答"}
    path = tmp_path / "arr.json"
    body = json.dumps([good, {"instruction": "无答"}, good], ensure_ascii=False, indent=2)
    path.write_text(body.replace(json.dumps(sep)[1:-1], sep), encoding="utf-8")
    convs, problems = read(path)
    assert len(convs) == 2 and convs[0].messages[1]["content"] == f"答{sep}答"
    assert [(p.index, p.line) for p in problems] == [(1, 6)]


@pytest.mark.parametrize("to", ["openai", "sharegpt", "alpaca"])
def test_convert_then_validate_round_trips_separators(tmp_path: Path, capsys, to: str):
    src = tmp_path / "src.jsonl"
    records = [{"instruction": f"问{i}{s}续", "input": "", "output": f"答{s}{i}"} for i, s in enumerate(SEPARATORS)]
    src.write_text("".join(_raw(r, SEPARATORS[i]) + "\n" for i, r in enumerate(records)), encoding="utf-8")
    out = tmp_path / f"out_{to}.jsonl"
    assert main(["data", "convert", str(src), "--to", to, "--out", str(out)]) == EXIT_OK
    assert main(["data", "validate", str(out)]) == EXIT_OK
    assert capsys.readouterr().out.strip().endswith(f"{out}: {len(records)} valid {to} records, 0 skipped")
    convs, problems = read(out)
    assert problems == []
    assert [c.messages[1]["content"] for c in convs] == [r["output"] for r in records]
    assert [c.messages[0]["content"] for c in convs] == [r["instruction"] for r in records]


def test_split_keeps_every_record_holding_a_separator(tmp_path: Path, capsys):
    src = tmp_path / "p.jsonl"
    records = [{"instruction": f"问{i}", "input": "", "output": f"答{i}\u2028第二行\x85第三行"} for i in range(20)]
    src.write_text("".join(_raw(r, "\u2028") + "\n" for r in records), encoding="utf-8")
    assert main(["data", "split", str(src), "--val", "0.2", "--out", str(tmp_path / "s")]) == EXIT_OK
    assert "train 16 / val 4" in capsys.readouterr().out
    for name in ("train.jsonl", "val.jsonl"):
        assert main(["data", "validate", str(tmp_path / "s" / name)]) == EXIT_OK


def test_field_case_u2028_alpaca(tmp_path: Path, capsys):
    path = field_case("ft_u2028_alpaca.jsonl")
    lines = path.read_bytes().decode("utf-8").split("\n")
    expected = [json.loads(line) for line in lines if line.strip()]
    assert any("\u2028" in r["output"] for r in expected)
    convs, problems = read(path)
    assert problems == [] and [c.messages[1]["content"] for c in convs] == [r["output"] for r in expected]
    out = tmp_path / "openai.jsonl"
    assert main(["data", "convert", str(path), "--to", "openai", "--out", str(out)]) == EXIT_OK
    assert main(["data", "validate", str(out)]) == EXIT_OK
    assert f"{len(expected)} valid openai records, 0 skipped" in capsys.readouterr().out


def test_metrics_line_holding_a_separator_is_read_whole(tmp_path: Path):
    append_metric(tmp_path, {"step": 1, "loss": 1.5})
    append_metric(tmp_path, {"step": 2, "event": "note\u2028with\x85separators\u2029"})
    append_metric(tmp_path, {"step": 3, "loss": 1.0})
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3]
    assert records[1]["event"] == "note\u2028with\x85separators\u2029"


def test_a_bad_line_after_separators_still_fails_validate_with_its_number(tmp_path: Path, capsys):
    path = tmp_path / "bad.jsonl"
    ok = {"messages": [{"role": "user", "content": "问\u2028问"}, {"role": "assistant", "content": "答\u2029答"}]}
    path.write_text("\n".join([_raw(ok, "\u2028"), _raw(ok, "\u2028"), "not json", _raw(ok, "\u2028")]) + "\n")
    assert main(["data", "validate", str(path)]) == EXIT_FAILED
    out = capsys.readouterr()
    assert out.out.strip() == f"{path}: 3 valid openai records, 1 skipped (see above)"
    assert f"skipped: {path}: line 3: malformed JSON" in out.err
