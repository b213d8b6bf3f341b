"""The `finetune data` commands: outputs, one-line summaries and exit codes scripts can trust."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from finetune.cli import EXIT_FAILED, EXIT_OK, main
from finetune.data.dataset import dedupe
from finetune.data.formats import read

from ..conftest import shared_file

ROOT = Path(__file__).resolve().parents[2]


def _alpaca(path: Path, n: int, bad: int = 0) -> Path:
    records = [{"instruction": f"问{i}", "input": "", "output": f"答{i}"} for i in range(n)]
    records += [{"instruction": "无答"} for _ in range(bad)]
    path.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def test_help_imports_nothing_heavy():
    code = (
        "import sys\nfrom finetune.cli import main\n"
        "for argv in (['--help'], ['data', '--help'], ['data', 'extract', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'ingest', 'finetune.data.formats',"
        " 'finetune.data.extract') if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_validate_exit_codes_and_summary(tmp_path, capsys):
    clean = _alpaca(tmp_path / "clean.json", 3)
    assert main(["data", "validate", str(clean)]) == EXIT_OK
    assert capsys.readouterr().out.strip() == f"{clean}: 3 valid alpaca records, 0 skipped"
    dirty = _alpaca(tmp_path / "dirty.json", 3, bad=2)
    assert main(["data", "validate", str(dirty)]) == EXIT_FAILED
    out = capsys.readouterr()
    assert out.out.strip() == f"{dirty}: 3 valid alpaca records, 2 skipped (see above)"
    assert out.err.count("skipped: ") == 2 and "missing field 'output'" in out.err and "(index 3)" in out.err


def test_missing_file_is_an_error_naming_it(tmp_path, capsys):
    assert main(["data", "validate", str(tmp_path / "nope.json")]) == EXIT_FAILED
    assert "nope.json: no such file" in capsys.readouterr().err


def test_convert_writes_the_target_format(tmp_path, capsys):
    src = _alpaca(tmp_path / "a.json", 4, bad=1)
    out = tmp_path / "out" / "b.jsonl"
    assert main(["data", "convert", str(src), "--to", "openai", "--out", str(out)]) == EXIT_FAILED  # one skipped
    assert "wrote 4 conversations" in capsys.readouterr().out
    lines = out.read_text(encoding="utf-8").splitlines()
    first = {"messages": [{"role": "user", "content": "问0"}, {"role": "assistant", "content": "答0"}]}
    assert json.loads(lines[0]) == first
    assert main(["data", "convert", str(out), "--to", "sharegpt", "--out", str(tmp_path / "c.json")]) == EXIT_OK
    assert json.loads((tmp_path / "c.json").read_text(encoding="utf-8"))[3]["conversations"][1]["value"] == "答3"


def test_split_dedupes_splits_mixes_and_records_what_it_did(tmp_path, capsys):
    src = _alpaca(tmp_path / "p.json", 50)
    records = json.loads(src.read_text(encoding="utf-8"))
    src.write_text(json.dumps(records + records[:5], ensure_ascii=False), encoding="utf-8")
    extra = tmp_path / "general.jsonl"
    extra.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]})
            + "\n"
            for i in range(100)
        )
    )
    out = tmp_path / "split"
    argv = ["data", "split", str(src), "--val", "0.2", "--seed", "3", "--out", str(out)]
    assert main([*argv, "--mix", str(extra), "--mix-ratio", "0.2"]) == EXIT_OK
    summary = capsys.readouterr().out.strip()
    assert summary.startswith("train 50 / val 10 (seed 3)") and "5 duplicates dropped, 10 mixed in" in summary
    train, _ = read(out / "train.json")
    val, _ = read(out / "val.json")
    assert len(train) == 50 and len(val) == 10
    assert sum(c.messages[0]["content"].startswith("q") for c in train) == 10
    assert not {c.messages[0]["content"] for c in train} & {c.messages[0]["content"] for c in val}
    record = json.loads((out / "split.json").read_text())
    assert record["duplicates_dropped"] == 5 and record["mix"]["added"] == 10 and record["seed"] == 3
    # the same seed gives the same split
    assert main([*argv[:-1], str(tmp_path / "again")]) == EXIT_OK
    assert (tmp_path / "again" / "val.json").read_text() == (out / "val.json").read_text()


def test_split_rejects_a_bad_share(tmp_path, capsys):
    src = _alpaca(tmp_path / "p.json", 5)
    assert main(["data", "split", str(src), "--val", "1.5", "--out", str(tmp_path / "o")]) == 2
    assert "--val" in capsys.readouterr().err


def test_extract_command(tmp_path, small_novel, capsys):
    out = tmp_path / "zg"
    argv = ["data", "extract", "--novel", str(small_novel), "--character", "诸葛亮", "--out", str(out)]
    assert main([*argv, "--aliases", "孔明，亮,卧龙,军师,丞相", "--sample", "2"]) == EXIT_OK
    line = capsys.readouterr().out.strip()
    assert line.startswith("7 pairs for 诸葛亮 (孔明 6, 丞相 1)") and line.endswith(f"-> {out}")
    assert (out / "pairs.jsonl").exists() and (out / "sample.md").exists() and (out / "report.json").exists()
    assert main([*argv, "--aliases", "孔明", "--format", "alpaca"]) == EXIT_OK
    assert (out / "pairs.json").exists()
    assert main([*argv[:-4], "--character", "司马懿", "--out", str(out)]) == EXIT_FAILED
    assert "no lines attributed to 司马懿" in capsys.readouterr().err


def test_huanhuan_imports_as_a_persona(tmp_path, capsys):
    path = shared_file("persona", "huanhuan.json")
    convs, problems = read(path)
    # measured: 3,729 records, 0 problems, 112 exact duplicates
    assert len(problems) <= 10
    assert len(convs) >= 3700
    assert all(len(c.messages) == 2 and c.system is None for c in convs)
    kept, dropped = dedupe(convs)
    assert 0 < dropped < 200 and len(kept) + dropped == len(convs)
    assert main(["data", "validate", str(path)]) == EXIT_OK
    assert main(["data", "split", str(path), "--val", "0.1", "--seed", "42", "--out", str(tmp_path / "hh")]) == EXIT_OK
    assert "train 3255 / val 362" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["data"], ["data", "train"]])
def test_usage_errors_exit_2(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


REVIEWS = "label,review\n1,很快，好吃\n0,送餐太慢，菜都凉了\n1,量很足\n2,标签错了\n0,\n"


def test_convert_labelled_csv_to_every_format(tmp_path: Path, capsys):
    src = tmp_path / "reviews.csv"
    src.write_text(REVIEWS, encoding="utf-8")
    out = tmp_path / "reviews.jsonl"
    code = main(["data", "convert", str(src), "--from", "csv", "--labels", "0=差评,1=好评", "--system", "专家。",
                 "--prompt", r"判断这条评论：\n{text}", "--to", "openai", "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == EXIT_FAILED  # two rows skipped, each named by its line
    assert "line 5: label '2' is not one of --labels (0, 1)" in err and "line 6: empty review" in err
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert records[1]["messages"] == [{"role": "system", "content": "专家。"},
                                      {"role": "user", "content": "判断这条评论：\n送餐太慢，菜都凉了"},
                                      {"role": "assistant", "content": "差评"}]  # fmt: skip
    for fmt in ("alpaca", "sharegpt"):  # any format; .csv is recognised without --from
        target = tmp_path / f"r.{fmt}.json"
        assert main(["data", "convert", str(src), "--labels", "0=差评,1=好评", "--to", fmt, "--out", str(target)]) == 1
        convs, problems = read(target)
        assert not problems and [c.messages[-1]["content"] for c in convs] == ["好评", "差评", "好评"]
        assert convs[0].messages[0]["content"] == "很快，好吃"  # default prompt: the text alone


def test_csv_columns_are_named_and_errors_say_how(tmp_path: Path, capsys):
    src = tmp_path / "t.csv"
    src.write_text("sentiment,text\npos,好\nneg,差\n", encoding="utf-8")
    out = tmp_path / "t.jsonl"
    assert main(["data", "convert", str(src), "--text-column", "text", "--label-column", "sentiment", "--to",
                 "openai", "--out", str(out)]) == EXIT_OK  # fmt: skip
    assert [c.messages[-1]["content"] for c in read(out)[0]] == ["pos", "neg"]  # no --labels: the values
    assert main(["data", "convert", str(src), "--to", "openai", "--out", str(out)]) == EXIT_FAILED
    assert "no column review, label (header: sentiment, text); name them with --text-column" in capsys.readouterr().err
    assert main(["data", "convert", str(src), "--labels", "pos", "--to", "openai", "--out", str(out)]) == EXIT_FAILED
    assert "'pos' is not VALUE=NAME" in capsys.readouterr().err


def test_validate_warns_when_one_label_is_the_whole_set(tmp_path: Path, capsys):
    one = tmp_path / "sorted.csv"
    one.write_text("label,review\n" + "".join(f"1,好吃{i}\n" for i in range(30)), encoding="utf-8")
    assert main(["data", "validate", str(one), "--labels", "0=差评,1=好评"]) == EXIT_OK
    err = capsys.readouterr().err
    assert "every record has the label '好评' (30 of 30)" in err and "sorted" in err
    skewed = tmp_path / "skewed.jsonl"
    rows = [("好吃", "好评")] * 19 + [("难吃", "差评")]
    skewed.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant",
                      "content": a}]}, ensure_ascii=False) + "\n" for q, a in rows), encoding="utf-8")  # fmt: skip
    main(["data", "validate", str(skewed)])
    assert "one label makes up 95% of the records (好评 19, 差评 1)" in capsys.readouterr().err
    balanced = _alpaca(tmp_path / "chat.json", 30)  # chat data: every answer differs, no label warning
    main(["data", "validate", str(balanced)])
    assert "warning" not in capsys.readouterr().err


def test_validate_the_sorted_head_of_waimai(tmp_path: Path, capsys):
    src = shared_file("classify/waimai_10k.csv")
    head = tmp_path / "head.csv"
    head.write_text("".join(src.read_text(encoding="utf-8").splitlines(keepends=True)[:201]), encoding="utf-8")
    main(["data", "validate", str(head), "--labels", "0=差评,1=好评"])
    assert "every record has the label '好评' (200 of 200)" in capsys.readouterr().err


def test_split_a_labelled_csv_into_messages(tmp_path: Path, capsys):
    src = tmp_path / "reviews.csv"
    src.write_text("label,review\n" + "".join(f"{i % 2},评论{i}\n" for i in range(20)), encoding="utf-8")
    out = tmp_path / "split"
    assert main(["data", "split", str(src), "--labels", "0=差评,1=好评", "--system", "专家。", "--val", "0.3",
                 "--seed", "100", "--out", str(out)]) == EXIT_OK  # fmt: skip
    assert "train 14 / val 6" in capsys.readouterr().out
    record = json.loads((out / "split.json").read_text(encoding="utf-8"))
    assert record["input_format"] == "csv" and record["format"] == "openai"
    convs, problems = read(out / "train.jsonl")
    assert not problems and {c.system for c in convs} == {"专家。"}
    assert {c.messages[-1]["content"] for c in convs} == {"差评", "好评"}
