"""The `finetune` command: `data extract | convert | validate | split`, `train`, `eval`, `merge`, `export`,
`chat`, `predict`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from finetune.data.formats import Conversation, Format, Problem

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
FORMAT_CHOICES = ["alpaca", "sharegpt", "openai"]


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true")
    source = argparse.ArgumentParser(add_help=False)
    source.add_argument(
        "--from", dest="src_format", choices=["auto", *FORMAT_CHOICES, "csv"], default="auto",
        help="input format (auto: csv for a .csv file, else from the records)",
    )
    _csv_options(source)

    p = argparse.ArgumentParser(
        prog="finetune", description="Persona fine-tuning: data sets, LoRA training, evaluation, merging."
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    data = sub.add_parser("data", help="build, convert, validate and split dialogue data sets")
    dsub = data.add_subparsers(dest="data_cmd", required=True)

    e = dsub.add_parser(
        "extract", parents=[common], help="a character's lines from a novel, paired with what prompted them"
    )
    e.add_argument("--novel", type=Path, required=True, help="plain-text novel (any encoding ingest detects)")
    e.add_argument("--character", required=True, help="the character's name, e.g. 诸葛亮")
    e.add_argument("--aliases", default="", help="other names in speaker tags, comma-separated: 孔明,亮,卧龙,军师,丞相")
    e.add_argument("--out", type=Path, required=True, help="folder for pairs, sample.md and report.json")
    e.add_argument(
        "--ambiguous",
        type=Path,
        help='JSON alias table overriding the defaults: {"丞相": {"chapters": [80, 104], "evidence": [...], '
        '"against": [...], "window": 300}, "亮": null}',
    )
    e.add_argument("--format", choices=FORMAT_CHOICES, default="openai", help="format of the pairs file")
    e.add_argument("--sample", type=int, default=50, help="pairs in sample.md for a person to check (default 50)")
    e.add_argument("--seed", type=int, default=0, help="seed for the sample")
    e.add_argument("--context", action="store_true", help="put chapter and speaker tag into the user turn too")

    c = dsub.add_parser("convert", parents=[common, source], help="convert between alpaca, sharegpt and openai")
    c.add_argument("input", type=Path)
    c.add_argument("--to", choices=FORMAT_CHOICES, required=True)
    c.add_argument("--out", type=Path, required=True, help="output file: .jsonl for JSON lines, else a JSON array")
    c.add_argument("--meta", action="store_true", help="keep each record's meta (a non-standard field)")

    v = dsub.add_parser("validate", parents=[common, source], help="report every bad record with its line")
    v.add_argument("input", type=Path)

    s = dsub.add_parser("split", parents=[common, source], help="de-duplicate and split into train/val with a seed")
    s.add_argument("input", type=Path)
    s.add_argument("--val", type=float, default=0.1, help="validation share (default 0.1)")
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--out", type=Path, required=True, help="folder for train, val and split.json")
    s.add_argument("--to", choices=FORMAT_CHOICES, help="output format (default: the input's)")
    s.add_argument("--no-dedupe", action="store_true", help="keep duplicate conversations")
    s.add_argument("--mix", type=Path, help="general or RAG-grounded data to mix into the training part")
    s.add_argument("--mix-ratio", type=float, default=0.2, help="share of --mix data in train (default 0.2: 80/20)")
    s.add_argument("--meta", action="store_true", help="keep each record's meta (a non-standard field)")
    _model_commands(sub, common)
    return p


def _csv_options(source: argparse.ArgumentParser) -> None:
    g = source.add_argument_group("labelled CSV input (--from csv): one conversation per row, the label as answer")
    g.add_argument("--text-column", default="review", help="column with the text (default review)")
    g.add_argument("--label-column", default="label", help="column with the label (default label)")
    g.add_argument("--labels", default="", help="label names by value, e.g. 0=差评,1=好评 (default: the values)")
    g.add_argument("--system", help="system prompt for every record, e.g. 你是一位外卖评论好评差评评论专家。")
    g.add_argument("--prompt", default="{text}", help="user turn around the text (default: the text alone), e.g. "
                   "'判断这条外卖评论是好评还是差评。\\n评论：{text}'")


def _model_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    t = sub.add_parser("train", parents=[common], help="LoRA/QLoRA training from a YAML config (resumes)")
    t.add_argument("config", type=Path, help="experiment YAML, e.g. finetune/configs/zhuge_liang_gemma270m.yaml")
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides: train.lr=1e-4 lora.r=16")
    t.add_argument("--restart", action="store_true", help="drop the output dir's checkpoints and metrics first")

    ev = sub.add_parser("eval", parents=[common], help="loss, BLEU/ROUGE-L/style or accuracy/F1; base vs tuned")
    ev.add_argument("run_dir", type=Path, help="a directory written by `finetune train`")
    ev.add_argument("--max-samples", type=int, help="held-out pairs to generate or score (0: all; default: config)")
    ev.add_argument("--no-base", action="store_true", help="skip the base model's side of the comparison")
    ev.add_argument("--reuse-samples", action="store_true",
                    help="score the answers in eval_samples.jsonl again instead of generating (same held-out pairs)")

    m = sub.add_parser("merge", parents=[common], help="fold the adapter into its base: a folder vLLM serves")
    m.add_argument("run_dir", type=Path, help="a directory written by `finetune train` (or one of its checkpoints)")
    m.add_argument("--out", type=Path, required=True, help="output model folder")
    m.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    m.add_argument("--force", action="store_true", help="replace --out if it exists")

    ch = sub.add_parser("chat", parents=[common], help="talk to a run, an export or a merged model (a turn a line)")
    ch.add_argument("model", type=Path, help="a run dir, one of its checkpoints, an exported adapter or a merged model")
    ch.add_argument("--system", help="system prompt (default: the one the model was trained with; '' for none)")
    ch.add_argument("--max-new-tokens", type=int, default=128)
    ch.add_argument("--device", default="auto", help="auto, cpu, cuda[:N] or mps")
    pr = sub.add_parser("predict", parents=[common], help="answer every prompt of a JSONL file into another")
    pr.add_argument("model", type=Path, help="a run dir, one of its checkpoints, an exported adapter or a merged model")
    pr.add_argument("--input", type=Path, required=True,
                    help='JSONL: {"prompt": ...}, {"messages": [...]} or Alpaca records, one a line')
    pr.add_argument("--out", type=Path, required=True, help="JSONL: each input record with its answer")
    pr.add_argument("--max-new-tokens", type=int, default=128)
    pr.add_argument("--batch-size", type=int, default=8)
    pr.add_argument("--device", default="auto", help="auto, cpu, cuda[:N] or mps")

    x = sub.add_parser("export", parents=[common], help="the adapter and its record in a small folder to ship")
    x.add_argument("run_dir", type=Path, help="a directory written by `finetune train` (after `finetune eval`)")
    x.add_argument("--out", type=Path, required=True, help="output folder (replaced if it exists)")
    x.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"],
                   help="adapter weights' dtype (float16 halves the size of a float32 run)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from finetune.data.formats import DataError
    from finetune.models.base import ModelError
    from finetune.training.config import ConfigError
    from finetune.training.runio import RunError

    try:
        if args.cmd == "data":
            return _data(args)
        from finetune import commands

        handlers = {"train": commands.train, "eval": commands.evaluate, "merge": commands.merge,
                    "export": commands.export, "chat": commands.chat, "predict": commands.predict}
        return handlers[args.cmd](args)
    except ConfigError as exc:
        print(f"error: config: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (DataError, ModelError, RunError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _read(args: argparse.Namespace) -> tuple[list[Conversation], list[Problem], Format]:
    """The input's conversations, its bad records (printed) and its format ("csv" for a labelled CSV)."""
    from finetune.data.formats import read_with_format

    path, src_format = args.input, args.src_format
    if src_format == "csv" or (src_format == "auto" and path.suffix.lower() == ".csv"):
        from finetune.data.labelled import CsvColumns, parse_label_names, read_labelled_csv

        prompt = args.prompt.replace("\\n", "\n")  # a shell gives `\n` as two characters
        cols = CsvColumns(args.text_column, args.label_column, parse_label_names(args.labels), prompt,
                          args.system)  # fmt: skip
        convs, problems = read_labelled_csv(path, cols)
        used = cast("Format", "csv")
    else:
        fmt = None if src_format == "auto" else cast("Format", src_format)
        convs, problems, used = read_with_format(path, fmt)
    for problem in problems:
        print(f"skipped: {problem}", file=sys.stderr)
    return convs, problems, used


def _skipped(problems: list[Problem]) -> str:
    return f"{len(problems)} skipped (see above)" if problems else "0 skipped"


def _data(args: argparse.Namespace) -> int:
    if args.data_cmd == "extract":
        return _extract(args)
    if args.data_cmd == "split" and (not 0 <= args.val < 1 or not 0 <= args.mix_ratio < 1):
        print("error: --val and --mix-ratio are shares in [0, 1), e.g. --val 0.1", file=sys.stderr)
        return EXIT_USAGE
    convs, problems, fmt = _read(args)
    status = EXIT_FAILED if problems else EXIT_OK  # a skipped record always shows in the exit code
    if args.data_cmd == "validate":
        from finetune.data.labelled import label_warning

        print(f"{args.input}: {len(convs)} valid {fmt} records, {_skipped(problems)}")
        warning = label_warning(convs)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        return status
    if not convs:
        print(f"error: {args.input}: no valid records to write", file=sys.stderr)
        return EXIT_FAILED
    if args.data_cmd == "split":
        return _split(args, convs, problems, fmt)
    from finetune.data.formats import write

    n = write(args.out, convs, args.to, meta=args.meta)
    print(f"wrote {n} conversations to {args.out} ({args.to}) from {args.input} ({fmt}); {_skipped(problems)}")
    return status


def _split(args: argparse.Namespace, convs: list[Conversation], problems: list[Problem], fmt: Format) -> int:
    from finetune.data.dataset import split_to_dir

    to = args.to or ("openai" if fmt == "csv" else None)
    r = split_to_dir(
        convs, args.input, fmt, args.out, to=to, val=args.val, seed=args.seed, dedupe_first=not args.no_dedupe,
        mix_path=args.mix, mix_ratio=args.mix_ratio, meta=args.meta, skipped=len(problems),
    )  # fmt: skip
    for problem in r.mix_problems:
        print(f"skipped: {problem}", file=sys.stderr)
    problems = problems + r.mix_problems
    mixed_note = f", {r.mixed} mixed in" if args.mix else ""
    print(
        f"train {r.train} / val {r.validation} (seed {args.seed}) in {args.out} from {args.input}; "
        f"{r.duplicates_dropped} duplicates dropped{mixed_note}; {_skipped(problems)}"
    )
    return EXIT_FAILED if problems else EXIT_OK


def _extract(args: argparse.Namespace) -> int:
    from finetune.data.aliases import load_overrides
    from finetune.data.extract import extract_to_dir

    aliases = [a.strip() for a in args.aliases.replace("，", ",").split(",") if a.strip()]
    overrides = load_overrides(args.ambiguous) if args.ambiguous else None
    report = extract_to_dir(
        args.novel,
        args.character,
        aliases,
        args.out,
        overrides,
        sample_size=args.sample,
        seed=args.seed,
        fmt=args.format,
        context=args.context,
    )
    if not report.pairs:
        print(
            f"error: no lines attributed to {args.character} in {args.novel}: check --character and --aliases "
            f"(the names used in speaker tags such as 孔明曰), and {args.out}/report.json for rejected tags",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(f"{report.line()} -> {args.out}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
