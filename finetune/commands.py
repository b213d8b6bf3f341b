"""The `finetune train | eval | merge | export | chat | predict` commands: call the library, print a report."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

EXIT_OK, EXIT_FAILED = 0, 1


def train(args: argparse.Namespace) -> int:
    from finetune.training.config import load_config
    from finetune.training.train import train as run

    cfg = load_config(args.config, args.overrides)
    result = run(cfg, restart=args.restart)
    if os.environ.get("RANK", "0") != "0":  # torchrun / accelerate launch: rank 0 reports for all
        return EXIT_OK
    resumed = f", resumed from step {result.resumed_from}" if result.resumed_from else ""
    val = f", val loss {result.val_loss:.4f}" if result.val_loss is not None else ""
    loss = f"{result.train_loss:.4f}" if result.train_loss is not None else "n/a"
    print(
        f"trained {result.steps} steps{resumed}: train loss {loss}{val}, {result.tokens_per_s:.0f} tokens/s "
        f"-> {result.run_dir} (adapter, tokenizer, config.yaml, metrics.jsonl, loss_curve.png)"
    )
    return EXIT_OK


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _print_classification(c: dict[str, Any]) -> None:
    print(f"classification on {c['test_rows']} held-out rows (trained on {c['train_rows']}):")
    print(f"  {'':14} {'accuracy':>9} {'macro F1':>9}")
    for name in ("tuned", "base", "majority", "tfidf_logreg"):
        if name in c:
            print(f"  {name:14} {_pct(c[name]['accuracy']):>9} {c[name]['macro_f1']:>9.3f}")
    cm = c["tuned"]["confusion_matrix"]
    print(f"  confusion matrix (tuned; rows true, columns predicted {cm['labels']}): {cm['matrix']}")


def _print_generation(g: dict[str, Any]) -> None:
    print(f"generation on {g['held_out']} held-out pairs:")
    print(f"  {'':10} {'BLEU':>7} {'ROUGE-L':>8} {'style':>6} {'raw':>6} {'copied':>7} {'chars':>6}")
    for name in ("tuned", "base", "reference"):
        if name in g:
            m = g[name]
            style, raw = m["style"]["score"], m.get("style_raw", m["style"])["score"]
            copied = m.get("copied_share", 0.0)
            print(f"  {name:10} {m['bleu']:>7.2f} {m['rouge_l']:>8.3f} {style:>6.3f} {raw:>6.3f} {copied:>7.1%} "
                  f"{m['mean_chars']:>6}")
    print("  style: persona register in the answer's own words (runs of 4+ characters copied from the prompt left"
          " out); raw: whole answers")


def evaluate(args: argparse.Namespace) -> int:
    from finetune.evaluation.evaluate import evaluate_run

    report = evaluate_run(args.run_dir, args.max_samples, base=False if args.no_base else None,
                          reuse_samples=args.reuse_samples)
    for name, v in report["val"].items():
        print(f"val loss ({name}): {v['loss']:.4f}, perplexity {v['perplexity']:.2f}")
    if "classification" in report:
        _print_classification(report["classification"])
    else:
        _print_generation(report["generation"])
    if report["overfitting"]:
        print(f"note: {report['overfitting']}", file=sys.stderr)
    print(f"wrote {args.run_dir}/eval.json" + (f" and {report['loss_curve']}" if report["loss_curve"] else ""))
    return EXIT_OK


def merge(args: argparse.Namespace) -> int:
    from finetune.models.merge import merge_run

    out = merge_run(args.run_dir, args.out, force=args.force, dtype=args.dtype)
    print(f"merged {args.run_dir} into its base -> {out} (safetensors, tokenizer, chat template, generation config)")
    return EXIT_OK


def export(args: argparse.Namespace) -> int:
    from finetune.models.export import EXPORT_FILE, export_run

    out = export_run(args.run_dir, args.out, dtype=args.dtype)
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"exported {args.run_dir} -> {out} ({args.dtype} adapter, {size:.1f} MiB in all; see {EXPORT_FILE})")
    return EXIT_OK


def chat(args: argparse.Namespace) -> int:
    from finetune.models.chat import EXIT, RESET, chat_loop, load_chat_model

    cm = load_chat_model(args.model, args.device)
    if sys.stdin.isatty():
        system = args.system if args.system is not None else cm.system
        print(f"{args.model} ({cm.kind}); system prompt: {system or '(none)'}. One turn a line; {RESET} starts "
              f"over, {EXIT} or Ctrl-D ends.", file=sys.stderr)
    chat_loop(cm, sys.stdin, sys.stdout, args.max_new_tokens, args.system)
    return EXIT_OK


def predict(args: argparse.Namespace) -> int:
    from finetune.models.chat import load_chat_model, predict_file

    cm = load_chat_model(args.model, args.device)
    n = predict_file(cm, args.input, args.out, args.max_new_tokens, args.batch_size)
    print(f"answered {n} prompts from {args.input} with {args.model} ({cm.kind}) -> {args.out}")
    return EXIT_OK
