"""`finetune eval`: validation loss, generation or classification metrics, base vs tuned, loss curve, overfitting."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from finetune.data.jsonfile import lines
from finetune.training.config import Config, load_config
from finetune.training.runio import CONFIG_FILE, RunError, read_metrics, write_json, write_text

log = logging.getLogger(__name__)
EVAL_FILE = "eval.json"
SAMPLES_FILE = "eval_samples.jsonl"


class EvalError(RunError):
    """A run directory cannot be evaluated; the message names the file and the fix."""


def load_run(run_dir: Path) -> tuple[Config, Any, Any, Any]:
    """(config, tokenizer, model with the run's adapter, device) for a directory written by `finetune train`."""
    from peft import PeftModel

    from finetune.models.base import load_causal_lm, load_tokenizer, quiet_peft, resolve_model
    from finetune.training.steps import pick_device

    if not (run_dir / CONFIG_FILE).is_file():
        raise EvalError(f"no {CONFIG_FILE} in {run_dir}: point at a directory written by `finetune train`")
    if not (run_dir / "adapter_config.json").is_file():
        raise EvalError(
            f"no adapter_config.json in {run_dir}: the run has not finished; resume it with "
            f"`finetune train {run_dir / CONFIG_FILE}`"
        )
    cfg = load_config(run_dir / CONFIG_FILE)
    device = pick_device(cfg.train.device)
    base = resolve_model(cfg.model, cfg.model_cache_dir)
    tokenizer = load_tokenizer(run_dir, fallback=base)
    with quiet_peft():
        model = PeftModel.from_pretrained(load_causal_lm(base, device=device), run_dir).to(device)
    model.eval()
    return cfg, tokenizer, model, device


def generate(
    model: Any, tokenizer: Any, prompts: list[list[dict[str, str]]], max_new_tokens: int, batch_size: int, device: Any
) -> list[str]:
    """Greedy answers to chat prompts, left-padded in batches, stopping at the template's end of turn."""
    import torch

    from finetune.models.template import encode_chat, end_of_turn_ids

    stops = end_of_turn_ids(tokenizer)
    pad = tokenizer.pad_token_id
    out: list[str] = []
    for i in range(0, len(prompts), batch_size):
        encoded = [encode_chat(tokenizer, p) for p in prompts[i : i + batch_size]]
        width = max(len(e) for e in encoded)
        ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded], device=device)
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded], device=device)
        with torch.no_grad():
            gen = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=pad,
            )
        out += [tokenizer.decode(g[width:], skip_special_tokens=True).strip() for g in gen]
    return out


def label_logprobs(
    model: Any, tokenizer: Any, prompts: list[list[dict[str, str]]], labels: list[str], batch_size: int, device: Any
) -> list[list[float]]:
    """For each prompt, the log-probability of each label as the whole answer (label tokens and end of turn)."""
    import torch

    from finetune.models.template import encode_chat_labels
    from finetune.training.steps import token_losses
    from finetune.training.trainset import Example, collate

    examples = [
        Example(*encode_chat_labels(tokenizer, [*p, {"role": "assistant", "content": lab}]))
        for p in prompts
        for lab in labels
    ]
    scores: list[float] = []
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            chunk = examples[i : i + batch_size]
            batch = collate([[ex] for ex in chunk], tokenizer.pad_token_id, packed=False)
            batch.pop("tokens")
            losses, rows = token_losses(model, {k: v.to(device) if v is not None else None for k, v in batch.items()})
            sums = torch.zeros(len(chunk), device=losses.device).index_add_(0, rows, losses)
            scores += [-float(v) for v in sums]
    k = len(labels)
    return [scores[j : j + k] for j in range(0, len(scores), k)]


def _classify(cfg: Config, model: Any, tokenizer: Any, device: Any, n: int, base: bool) -> dict[str, Any]:
    from finetune.evaluation.classify import baselines, load_split, metrics, to_conversation
    from finetune.training.trainset import messages_of

    train_rows, test_rows = load_split(cfg.data)
    test_rows = test_rows[:n] if n else test_rows
    prompts = [messages_of(to_conversation(r, cfg.data), cfg.data.system)[:-1] for r in test_rows]
    y = [r.label for r in test_rows]
    result: dict[str, Any] = {"test_rows": len(test_rows), "train_rows": len(train_rows)}
    runs = [("tuned", None)] + ([("base", model.disable_adapter)] if base else [])
    for name, ctx in runs:
        if ctx is None:
            scores = label_logprobs(model, tokenizer, prompts, cfg.data.labels, cfg.eval.batch_size, device)
        else:
            with ctx():
                scores = label_logprobs(model, tokenizer, prompts, cfg.data.labels, cfg.eval.batch_size, device)
        result[name] = metrics(y, [max(range(len(s)), key=s.__getitem__) for s in scores], cfg.data.labels)
    result.update(baselines(train_rows, test_rows, cfg.data.labels))
    return result


def _chat(
    cfg: Config, model: Any, tokenizer: Any, device: Any, n: int, base: bool, run_dir: Path, reuse: bool = False
) -> dict[str, Any]:
    from finetune.evaluation.textmetrics import generation_metrics
    from finetune.training.trainset import load_conversations, messages_of

    _, val = load_conversations(cfg)
    held = val[:n] if n else val
    prompts = [messages_of(c, cfg.data.system)[:-1] for c in held]
    refs = [c.messages[-1]["content"] for c in held]
    answers = _saved_answers(run_dir, prompts, refs, base) if reuse else None
    if answers is None:
        gen = cfg.eval.max_new_tokens, cfg.eval.batch_size, device
        answers = {"tuned": generate(model, tokenizer, prompts, *gen)}
        if base:
            with model.disable_adapter():
                answers["base"] = generate(model, tokenizer, prompts, *gen)
        rows = [
            {"prompt": p[-1]["content"], "reference": r, **{k: v[i] for k, v in answers.items()}}
            for i, (p, r) in enumerate(zip(prompts, refs, strict=True))
        ]
        write_text(run_dir / SAMPLES_FILE, "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows))
    sources = [[m["content"] for m in p] for p in prompts]  # system prompt, history, question
    result: dict[str, Any] = {
        "held_out": len(held),
        "reference": generation_metrics(refs, refs, cfg.eval.style, sources),
    }
    for name, hyps in answers.items():
        result[name] = generation_metrics(hyps, refs, cfg.eval.style, sources)
    return result


def _saved_answers(
    run_dir: Path, prompts: list[list[dict[str, str]]], refs: list[str], base: bool
) -> dict[str, list[str]] | None:
    """The answers of an earlier `finetune eval` of this run, when its samples are for the same held-out pairs."""
    path = run_dir / SAMPLES_FILE
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in lines(path.read_text(encoding="utf-8")) if line.strip()]
    same = len(rows) == len(prompts) and all(
        r.get("prompt") == p[-1]["content"] and r.get("reference") == ref
        for r, p, ref in zip(rows, prompts, refs, strict=False)
    )
    names = ["tuned", "base"] if base else ["tuned"]
    if not same or not all(name in r for r in rows for name in names):
        log.warning("%s is not for these held-out pairs: generating again", path)
        return None
    return {name: [r[name] for r in rows] for name in names}


def evaluate_run(
    run_dir: str | Path, max_samples: int | None = None, base: bool | None = None, reuse_samples: bool = False
) -> dict[str, Any]:
    """Evaluate a finished run and write eval.json (and eval_samples.jsonl for chat) into it. `reuse_samples`:
    score the answers of the last evaluation (eval_samples.jsonl) again instead of generating them (the metrics
    changed, the model did not)."""
    from finetune.evaluation.plots import overfitting_note, plot_loss_curve
    from finetune.training.steps import mean_loss
    from finetune.training.trainset import load_conversations, tokenize

    run_dir = Path(run_dir)
    cfg, tokenizer, model, device = load_run(run_dir)
    n = cfg.eval.max_samples if max_samples is None else max_samples
    base = cfg.eval.compare_base if base is None else base
    _, val = load_conversations(cfg)
    t = cfg.train
    val_ex = tokenize(tokenizer, val[: t.val_max_examples or None], t.max_seq_len, cfg.data.system)
    report: dict[str, Any] = {"run": str(run_dir), "task": cfg.task, "model": cfg.model, "val_examples": len(val_ex)}
    losses = {"tuned": mean_loss(model, val_ex, t, device, False, tokenizer.pad_token_id)}
    if base:
        with model.disable_adapter():
            losses["base"] = mean_loss(model, val_ex, t, device, False, tokenizer.pad_token_id)
    report["val"] = {k: {"loss": round(v, 5), "perplexity": round(math.exp(min(v, 50)), 3)} for k, v in losses.items()}
    if cfg.task == "classify":
        report["classification"] = _classify(cfg, model, tokenizer, device, n, base)
    else:
        report["generation"] = _chat(cfg, model, tokenizer, device, n, base, run_dir, reuse_samples)
    plot = plot_loss_curve(run_dir)
    report["loss_curve"] = str(plot) if plot else None
    report["overfitting"] = overfitting_note(read_metrics(run_dir))
    write_json(run_dir / EVAL_FILE, report)
    return report
