"""Benchmark: LoRA training speed of `finetune train` against a plain HF Trainer + peft baseline, same run.

Both sides get the same base model, the same tokenized examples (the config's data, assistant-only labels, cut to
the same max_seq_len), the same LoRA (rank, alpha, dropout, target modules), learning rate, schedule, warm-up,
gradient clipping, precision and number of optimizer steps. What differs is what each does with the examples:

- ours: `finetune.training.train.train` (the `finetune train` loop): packed rows of max_seq_len, LM head only on
  labelled positions; `train.batch_size` rows per step;
- baseline: `transformers.Trainer` on the examples, padded per batch (DataCollatorForSeq2Seq, labels padded
  with -100), the model's own loss (full-vocabulary logits). Its per-device batch holds about as many real tokens
  per optimizer step as ours (`--baseline-batch-size` to set it), so both optimise on the same amount of data.

Each side runs in its own subprocess (a fresh process: peak RSS on CPU is a process high-water mark). Reported:
tokens/s over the steps after `--warmup` (real, non-padding tokens), peak memory (process RSS on CPU,
`torch.cuda.max_memory_allocated` on CUDA, taken before the evaluation), MFU on CUDA, and the held-out loss of both
adapters measured the same way (model's own loss, one example at a time, mean per label token).

    # CPU (small number of steps, one thread on a shared machine):
    OMP_NUM_THREADS=1 python bench/train_bench.py --steps 6 --warmup 2 train.batch_size=4
    # CUDA GPU (unchanged; bf16 where supported):
    python bench/train_bench.py --steps 30 --warmup 5

Extra `key=value` arguments override the config as in `finetune train`. Writes bench/results/train_<device>.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "finetune" / "configs" / "zhuge_liang_gemma270m.yaml"
# Dense bf16 tensor-core peaks (TFLOP/s) by GPU name, for MFU; --peak-tflops overrides.
PEAK_BF16_TFLOPS = {
    "H200": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 989.0, "GH200": 989.0, "B200": 2250.0,
    "A100": 312.0, "A10G": 125.0, "A10": 125.0, "L40S": 362.0, "L4": 121.0, "RTX 4090": 165.0,
}  # fmt: skip


# -- shared by both workers ------------------------------------------------------------------------------------------


def _setup(spec: dict[str, Any], output_dir: str) -> dict[str, Any]:
    import torch

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    from finetune.models.base import load_tokenizer, resolve_model
    from finetune.training.config import load_config
    from finetune.training.steps import pick_device, use_bf16
    from finetune.training.trainset import load_conversations, tokenize

    cfg = load_config(spec["config"], [*spec["overrides"], f"output_dir={output_dir}"])
    device = pick_device(cfg.train.device)
    base = resolve_model(cfg.model, cfg.model_cache_dir)
    tokenizer = load_tokenizer(base)
    train_convs, val_convs = load_conversations(cfg)
    t = cfg.train
    train_ex = tokenize(tokenizer, train_convs, t.max_seq_len, cfg.data.system)
    val_ex = tokenize(tokenizer, val_convs[: spec["eval_examples"] or None], t.max_seq_len, cfg.data.system)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    return {
        "cfg": cfg, "device": device, "bf16": use_bf16(t.bf16, device), "base": base, "tokenizer": tokenizer,
        "train_ex": train_ex, "val_ex": val_ex,
    }  # fmt: skip


def _peak_mb(device: Any) -> float:
    import torch

    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    try:  # this process's own high-water mark (ru_maxrss would carry the parent's over across fork and exec)
        with open("/proc/self/status") as f:
            return round(next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024, 1)
    except (OSError, StopIteration):
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _rss_mb() -> float:
    import psutil

    return round(psutil.Process().memory_info().rss / 2**20, 1)


def heldout_loss(model: Any, examples: list[Any], device: Any, bf16: bool) -> float:
    """Mean cross-entropy per label token, each example on its own through the model's own loss: the same
    measurement for both adapters, independent of either training loop's batching."""
    import torch

    total = count = 0.0
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for ex in examples:
            ids = torch.tensor([ex.ids], device=device)
            labels = torch.tensor([ex.labels], device=device)
            n = int((labels[:, 1:] != -100).sum())
            if n == 0:
                continue
            loss = model(input_ids=ids, labels=labels, use_cache=False).loss
            total += float(loss) * n
            count += n
    return total / max(count, 1)


def model_flops_per_token(model: Any, seq_len: int) -> dict[str, float]:
    """Training FLOPs per token by the usual convention (PaLM appendix B): 6 x the parameters a token's matmuls
    touch (decoder weights plus the LM head, not the embedding lookup) + 12 x layers x attention width x seq_len.
    The same count for both sides, so MFU ratios equal tokens/s ratios. LoRA skips the frozen weights' gradients,
    so a LoRA run reaches about 2/3 of the MFU a full fine-tune could."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = inner.config
    emb = inner.get_input_embeddings().weight
    head = inner.get_output_embeddings()
    body = sum(p.numel() for n, p in inner.named_parameters() if "lora_" not in n and p is not emb)
    tied = head is not None and head.weight is emb
    head_params = emb.numel() if tied else 0  # an untied head is already in `body`
    layers = getattr(cfg, "num_hidden_layers", 0)
    width = getattr(cfg, "num_attention_heads", 0) * (
        getattr(cfg, "head_dim", None) or cfg.hidden_size // max(cfg.num_attention_heads, 1)
    )
    matmul = body + head_params
    return {"params_in_matmuls": float(matmul), "flops_per_token": float(6 * matmul + 12 * layers * width * seq_len)}


def _steady(rows: list[tuple[float, int]], warmup: int) -> dict[str, Any]:
    """tokens/s over the steps after `warmup`; rows are (seconds, tokens) per optimizer step."""
    timed = rows[warmup:]
    seconds = sum(s for s, _ in timed)
    tokens = sum(n for _, n in timed)
    return {
        "timed_steps": len(timed),
        "timed_tokens": tokens,
        "timed_seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
        "seconds_per_step": round(seconds / len(timed), 3) if timed else None,
    }


# -- the two workers -------------------------------------------------------------------------------------------------


def run_ours(spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    from peft import PeftModel

    from finetune.models.base import load_causal_lm, quiet_peft
    from finetune.training.runio import read_metrics
    from finetune.training.train import train

    with tempfile.TemporaryDirectory(prefix="bench-ours-") as tmp:
        s = _setup(spec, tmp)
        cfg, device = s["cfg"], s["device"]
        rss_loaded = _rss_mb()
        started = time.perf_counter()
        result = train(cfg, restart=True)
        wall = time.perf_counter() - started
        peak = _peak_mb(device)
        steps = [r for r in read_metrics(tmp) if "loss" in r]
        dtype = torch.bfloat16 if s["bf16"] else torch.float32  # as train() loads it
        with quiet_peft():
            model = PeftModel.from_pretrained(load_causal_lm(s["base"], dtype, device), tmp).to(device)
        flops = model_flops_per_token(model, cfg.train.max_seq_len)
        loss = heldout_loss(model, s["val_ex"], device, s["bf16"])
    return {
        **_steady([(r["seconds"], r["tokens"]) for r in steps], spec["warmup"]),
        "steps": len(steps),
        "tokens_per_step": round(sum(r["tokens"] for r in steps) / max(len(steps), 1), 1),
        "label_tokens_per_step": round(sum(r["label_tokens"] for r in steps) / max(len(steps), 1), 1),
        "batch": f"{cfg.train.batch_size} packed rows x {cfg.train.max_seq_len}",
        "train_loss_per_step": [round(r["loss"], 4) for r in steps],
        "final_train_loss": result.train_loss,
        "eval_loss": round(loss, 5),
        "peak_memory_mb": peak,
        "rss_after_data_mb": rss_loaded,
        "wall_seconds_train_call": round(wall, 1),
        **flops,
    }


def run_baseline(spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    from finetune.models.base import load_causal_lm

    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as tmp:
        s = _setup(spec, tmp)
        cfg, device, bf16, tokenizer = s["cfg"], s["device"], s["bf16"], s["tokenizer"]
        t, lo = cfg.train, cfg.lora
        rss_loaded = _rss_mb()
        model = load_causal_lm(s["base"], torch.bfloat16 if bf16 else torch.float32, device)
        if t.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        spec_lora = LoraConfig(
            r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout, target_modules=list(lo.target_modules),
            task_type="CAUSAL_LM",
        )  # fmt: skip
        model = get_peft_model(model, spec_lora)
        tokenizer.padding_side = "right"
        data = [{"input_ids": ex.ids, "labels": ex.labels} for ex in s["train_ex"]]
        total = spec["steps"] + spec["warmup"]
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=spec["baseline_batch_size"],
            gradient_accumulation_steps=t.grad_accum,
            max_steps=total,
            learning_rate=t.lr,
            lr_scheduler_type=t.scheduler,
            warmup_steps=round(t.warmup_ratio * total),
            weight_decay=t.weight_decay,
            max_grad_norm=t.max_grad_norm,
            bf16=bf16,
            seed=t.seed,
            logging_steps=1,
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            disable_tqdm=True,
            dataloader_num_workers=0,
            use_cpu=device.type == "cpu",
            include_num_input_tokens_seen="non_padding",
        )
        marks: list[tuple[float, int]] = []

        class Clock(TrainerCallback):
            def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                marks.append((time.perf_counter(), 0))

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                marks.append((time.perf_counter(), int(state.num_input_tokens_seen)))

        collator = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100)
        trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collator, callbacks=[Clock()])
        started = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - started
        peak = _peak_mb(device)
        # step k: from the end of step k-1 (or the start of training) to the end of step k, data loading included
        rows = [(b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(marks)]
        losses = [round(r["loss"], 4) for r in trainer.state.log_history if "loss" in r]
        flops = model_flops_per_token(trainer.model, t.max_seq_len)
        loss = heldout_loss(trainer.model, s["val_ex"], device, bf16)
    return {
        **_steady(rows, spec["warmup"]),
        "steps": len(rows),
        "tokens_per_step": round(sum(n for _, n in rows) / max(len(rows), 1), 1),
        "batch": f"{spec['baseline_batch_size']} examples padded to the longest (<= {t.max_seq_len})",
        "train_loss_per_step": losses,
        "final_train_loss": losses[-1] if losses else None,
        "eval_loss": round(loss, 5),
        "peak_memory_mb": peak,
        "rss_after_data_mb": rss_loaded,
        "wall_seconds_train_call": round(wall, 1),
        **flops,
    }


# -- the parent: plan, spawn, compare --------------------------------------------------------------------------------


def _plan(args: argparse.Namespace) -> dict[str, Any]:
    """Settings both workers share, and the baseline batch that carries as many real tokens as ours."""
    from finetune.models.base import load_tokenizer, resolve_model
    from finetune.training.config import load_config
    from finetune.training.trainset import load_conversations, pack, tokenize

    overrides = [*args.overrides, f"train.max_steps={args.steps + args.warmup}", "train.eval_every=0"]
    overrides += ["train.save_every=0", "train.val_max_examples=1"]  # ours' own end-of-run check: one example
    if args.model:
        overrides.append(f"model={args.model}")
    if args.device:
        overrides.append(f"train.device={args.device}")
    cfg = load_config(args.config, overrides)
    t = cfg.train
    tokenizer = load_tokenizer(resolve_model(cfg.model, cfg.model_cache_dir))
    train_convs, val_convs = load_conversations(cfg)
    ex = tokenize(tokenizer, train_convs, t.max_seq_len, cfg.data.system)
    rows = pack(ex, t.max_seq_len) if t.batching == "packing" else [[e] for e in ex]
    tokens = sum(len(e) for e in ex)
    per_row = tokens / len(rows)
    per_example = tokens / len(ex)
    baseline_bs = args.baseline_batch_size or max(1, round(t.batch_size * per_row / per_example))
    n_eval = min(args.eval_examples or len(val_convs), len(val_convs))
    return {
        "config": str(args.config), "overrides": overrides, "steps": args.steps, "warmup": args.warmup,
        "threads": args.threads, "eval_examples": n_eval, "baseline_batch_size": baseline_bs,
        "model": cfg.model, "max_seq_len": t.max_seq_len, "ours_batch_rows": t.batch_size, "batching": t.batching,
        "grad_accum": t.grad_accum, "lr": t.lr, "scheduler": t.scheduler,
        "lora": {"r": cfg.lora.r, "alpha": cfg.lora.alpha, "dropout": cfg.lora.dropout,
                 "target_modules": cfg.lora.target_modules},
        "train_examples": len(ex), "train_tokens": tokens, "mean_example_tokens": round(per_example, 1),
        "packed_rows": len(rows), "mean_row_tokens": round(per_row, 1),
    }  # fmt: skip


def _device_info(device: str | None) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available() and (device is None or device.startswith(("cuda", "auto")))
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    if cuda:
        name = torch.cuda.get_device_name(0)
        info.update(device="cuda", device_name=name, bf16=torch.cuda.is_bf16_supported())
        short = re.sub(r"[^a-z0-9]+", "-", name.lower().replace("nvidia", "")).strip("-")
        info["slug"] = f"cuda-{short}"
    else:
        info.update(device="cpu", device_name=platform.processor() or platform.machine(), slug="cpu")
    try:
        import peft
        import transformers

        info.update(transformers=transformers.__version__, peft=peft.__version__)
    except ImportError:
        pass
    return info


def _peak_tflops(name: str, override: float | None) -> float | None:
    if override:
        return override
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):  # "H100 PCIe" before "H100"
        if key.lower() in name.lower():
            return PEAK_BF16_TFLOPS[key]
    return None


def _spawn(case: str, spec_path: Path, env: dict[str, str]) -> dict[str, Any]:
    out = spec_path.with_name(f"{case}.json")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", case, "--spec", str(spec_path)]
    cmd += ["--result", str(out)]
    print(f"== {case}: {' '.join(cmd)}", flush=True)
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{case} worker failed with exit code {proc.returncode}")
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    result["process_wall_seconds"] = round(time.perf_counter() - started, 1)
    print(f"== {case}: {result['tokens_per_s']} tokens/s, peak {result['peak_memory_mb']} MB, "
          f"eval loss {result['eval_loss']}", flush=True)  # fmt: skip
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.batch_size=4")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--model", help="base model (folder, hub id or gemma-3-270m); default: the config's")
    p.add_argument("--device", help="cpu | cuda | cuda:N (default: the config's train.device, auto)")
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps per side (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--baseline-batch-size", type=int, help="Trainer per-device batch (default: same real tokens)")
    p.add_argument("--eval-examples", type=int, default=0, help="held-out examples for the eval loss (0: all)")
    p.add_argument("--threads", type=int, help="torch CPU threads in the workers (default: OMP_NUM_THREADS)")
    p.add_argument("--order", default="ours,baseline", help="which side runs first (default ours,baseline)")
    p.add_argument("--peak-tflops", type=float, help="the GPU's peak TFLOP/s for MFU (default: by GPU name)")
    p.add_argument("--out", type=Path, help="default bench/results/train_<device>.json")
    p.add_argument("--worker", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    p.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))

    if args.worker:  # one side, in its own process
        spec = json.loads(args.spec.read_text(encoding="utf-8"))
        result = (run_ours if args.worker == "ours" else run_baseline)(spec)
        args.result.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        return 0

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    spec = _plan(args)
    info = _device_info(args.device)
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    print(json.dumps(spec, ensure_ascii=False), flush=True)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        for case in [c.strip() for c in args.order.split(",") if c.strip()]:
            results[case] = _spawn(case, spec_path, env)
    ours, base = results["ours"], results["baseline"]
    out: dict[str, Any] = {
        "date": date.today().isoformat(),
        **{k: v for k, v in info.items() if k != "slug"},
        "omp_num_threads": env.get("OMP_NUM_THREADS"),
        "settings": spec,
        "ours": ours,
        "baseline": base,
    }
    peak = _peak_tflops(info["device_name"], args.peak_tflops) if info["device"] == "cuda" else None
    for side in (ours, base):
        rate = side["tokens_per_s"]
        side["mfu"] = round(rate * side["flops_per_token"] / (peak * 1e12), 4) if peak and rate else None
    out["peak_tflops"] = peak
    out["comparison"] = {
        "tokens_per_s_ratio": round(ours["tokens_per_s"] / base["tokens_per_s"], 3),
        "peak_memory_ratio": round(ours["peak_memory_mb"] / base["peak_memory_mb"], 3),
        "eval_loss_rel_diff": round(ours["eval_loss"] / base["eval_loss"] - 1, 4),
        "goal": ">= 1.5x tokens/s, <= baseline peak memory, eval loss within 1%",
    }
    c = out["comparison"]
    c["goal_met"] = bool(
        c["tokens_per_s_ratio"] >= 1.5 and c["peak_memory_ratio"] <= 1.0 and abs(c["eval_loss_rel_diff"]) <= 0.01
    )
    target = args.out or ROOT / "bench" / "results" / f"train_{info['slug']}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(out, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(out["comparison"], indent=2))
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
