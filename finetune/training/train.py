"""LoRA/QLoRA training as setup, loop and finish: packed or length-grouped batches, checkpoints, resume, metrics."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.training.config import Config, changed_keys, dump_yaml, load_config
from finetune.training.distributed import (
    World,
    all_sum,
    barrier,
    broadcast,
    shard,
    start,
    stop,
    sum_gradients,
    world_from_env,
)
from finetune.training.progress import TrainProgress
from finetune.training.runio import (
    CONFIG_FILE,
    SUMMARY_FILE,
    RunError,
    append_metric,
    checkpoints,
    clear_run,
    read_metrics,
    tidy,
    truncate_metrics,
    write_json,
    write_text,
    writing,
)
from finetune.training.state import Loop, restore_state, save_state, write_final
from finetune.training.steps import batch_loss, mean_loss, peak_memory_mb, pick_device, use_bf16
from finetune.training.trainset import Example

log = logging.getLogger(__name__)
# What may change between an interrupted run and its resumption: how long, how often, how it is evaluated.
RESUMABLE = frozenset(
    {"train.max_steps", "train.epochs", "train.eval_every", "train.save_every", "train.keep_checkpoints"}
    | {"train.device", "output_dir", "eval"}
)


class TrainError(RunError):
    """Training cannot start or go on; the message names the cause and the fix."""


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    train_loss: float | None
    val_loss: float | None
    tokens_per_s: float
    seconds: float
    resumed_from: int | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def missing_modules(wanted: list[str], targets: set[str]) -> str | None:
    """Why `wanted` target modules do not fit a model whose LoRA-able modules are `targets` (dotted names; a wanted
    name matches a module's name or its last dotted parts, as peft matches them); None when they all do."""
    missing = [m for m in wanted if not any(t == m or t.endswith("." + m) for t in targets)]
    if not missing:
        return None
    leaves = ", ".join(sorted({t.rsplit(".", 1)[-1] for t in targets}))
    return f"{', '.join(repr(m) for m in missing)} not a layer of this model LoRA can adapt (it has {leaves})"


def _lora(model: Any, cfg: Config) -> Any:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from finetune.models.base import lora_targets

    if cfg.lora.qlora:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.train.gradient_checkpointing)
    elif cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    problem = missing_modules(cfg.lora.target_modules, lora_targets(model))
    if problem:
        raise TrainError(f"lora.target_modules: {problem}")
    spec = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.target_modules),
        task_type="CAUSAL_LM",
    )
    from finetune.models.base import quiet_peft

    with quiet_peft():
        return get_peft_model(model, spec)


def _prepare_dir(cfg: Config, restart: bool, world: World) -> tuple[Path, list[tuple[int, Path]]]:
    run_dir = Path(cfg.output_dir)
    if world.main:
        with writing(run_dir):
            run_dir.mkdir(parents=True, exist_ok=True)
            if restart:
                clear_run(run_dir)
            tidy(run_dir)
    barrier(world)
    found = checkpoints(run_dir)
    if found and (run_dir / CONFIG_FILE).is_file():
        diffs = changed_keys(load_config(run_dir / CONFIG_FILE), cfg, RESUMABLE)
        if diffs:
            raise TrainError(
                f"{run_dir} holds checkpoints of a different experiment ({', '.join(diffs[:4])}): "
                "set another output_dir, or pass --restart to start this one over"
            )
    header = f"finetune train {run_dir / CONFIG_FILE}\nresolved config of this run (merge and eval read it)"
    if world.main:
        write_text(run_dir / CONFIG_FILE, dump_yaml(cfg, header))
    return run_dir, found


@dataclass
class _Run:
    """A run once set up: what the loop steps through and what `finish` writes out."""

    cfg: Config
    run_dir: Path
    device: Any
    bf16: bool
    base: Path
    tokenizer: Any
    train_ex: list[Example]
    val_ex: list[Example]
    rows: list[list[Example]]  # packed rows, or one example each
    per_epoch: int  # optimizer steps
    total: int
    model: Any = None
    trainable: list[Any] = field(default_factory=list)  # the LoRA parameters
    optimizer: Any = None
    scheduler: Any = None
    loop: Loop = field(default_factory=Loop)
    resumed: int | None = None
    last_loss: float | None = None
    val_loss: float | None = None
    world: World = field(default_factory=World)
    progress: TrainProgress | None = None

    def validate(self) -> float | None:
        """The validation loss, on rank 0 only (the other ranks wait for it at the next step)."""
        if not self.val_ex or not self.world.main:
            return None
        loss = mean_loss(self.model, self.val_ex, self.cfg.train, self.device, self.bf16, self.tokenizer.pad_token_id)
        append_metric(self.run_dir, {"step": self.loop.step, "val_loss": loss, "val_ppl": math.exp(min(loss, 50))})
        if self.progress is not None:
            self.progress.note(f"step {self.loop.step}: val loss {loss:.4f}")
        return loss

    def save(self) -> None:
        if not self.world.main:
            return
        keep = self.cfg.train.keep_checkpoints
        save_state(self.run_dir, self.loop, self.model, self.optimizer, self.scheduler, self.device, keep)

    def plot(self) -> None:
        """The loss curve so far (rank 0): a run shows its curve while it trains, not only at the end."""
        if self.world.main:
            _plot(self.run_dir)

    def result(self, summary: dict[str, Any] | None = None) -> TrainResult:
        loop = self.loop
        return TrainResult(self.run_dir, loop.step, self.last_loss, self.val_loss, loop.rate(), loop.seconds,
                           self.resumed, summary or {})  # fmt: skip


def _examples(cfg: Config, tokenizer: Any) -> tuple[list[Example], list[Example], list[list[Example]], int, int]:
    """(train examples, validation examples, rows, steps per epoch, total steps) for `cfg`'s data."""
    from finetune.training.trainset import epoch_batches, load_conversations, pack, tokenize

    t = cfg.train
    train_convs, val_convs = load_conversations(cfg)
    train_ex = tokenize(tokenizer, train_convs, t.max_seq_len, cfg.data.system)
    val_ex = tokenize(tokenizer, val_convs[: t.val_max_examples or None], t.max_seq_len, cfg.data.system)
    if not train_ex:
        raise TrainError(f"data.train: no example left to train on in {cfg.data.train}")
    rows = pack(train_ex, t.max_seq_len) if t.batching == "packing" else [[e] for e in train_ex]
    per_epoch = math.ceil(len(epoch_batches(rows, t.batch_size, t.batching, t.seed, 0)) / t.grad_accum)
    total = t.max_steps or max(1, math.ceil(per_epoch * t.epochs))
    log.info("%d train / %d val examples in %d rows; %d steps/epoch, %d steps", len(train_ex), len(val_ex),
             len(rows), per_epoch, total)  # fmt: skip
    return train_ex, val_ex, rows, per_epoch, total


def setup(cfg: Config, restart: bool = False) -> _Run:
    """Check `cfg` against this machine, prepare the run directory, tokenize and batch the data, build the LoRA
    model, its optimizer and schedule, and restore the last checkpoint when there is one (unless `restart`)."""
    import torch
    from transformers import get_scheduler

    from finetune.models.base import load_causal_lm, load_tokenizer, qlora_unavailable, resolve_model

    world = world_from_env()
    device = start(world, pick_device(cfg.train.device))
    why = qlora_unavailable(device) if cfg.lora.qlora else None
    if why:
        raise TrainError(why)
    run_dir, found = _prepare_dir(cfg, restart, world)
    bf16 = use_bf16(cfg.train.bf16, device)
    torch.manual_seed(cfg.train.seed)
    t = cfg.train
    base = resolve_model(cfg.model, cfg.model_cache_dir)
    try:
        tokenizer = load_tokenizer(base, template=cfg.chat_template)
    except ValueError as exc:  # a chat_template that names nothing
        raise TrainError(str(exc)) from None
    run = _Run(cfg, run_dir, device, bf16, base, tokenizer, *_examples(cfg, tokenizer), world=world)

    dtype = torch.bfloat16 if bf16 else torch.float32
    run.model = _lora(load_causal_lm(base, dtype, device, cfg.lora.qlora), cfg)
    run.trainable = [p for p in run.model.parameters() if p.requires_grad]
    broadcast(run.trainable, world)
    run.optimizer = torch.optim.AdamW(run.trainable, lr=t.lr, weight_decay=t.weight_decay, fused=device.type == "cuda")
    warmup = round(t.warmup_ratio * run.total)
    run.scheduler = get_scheduler(t.scheduler, run.optimizer, num_warmup_steps=warmup, num_training_steps=run.total)
    if found:
        run.resumed, ckpt = found[-1]
        run.loop = restore_state(ckpt, run.model, run.optimizer, run.scheduler, device)
        log.info("resuming from %s (step %d of %d)", ckpt, run.resumed, run.total)
        if world.main:
            truncate_metrics(run_dir, run.resumed)
            append_metric(run_dir, {"step": run.resumed, "event": "resume"})
    elif world.main:
        truncate_metrics(run_dir, -1)
    return run


def _step(run: _Run, group: list[list[list[Example]]], n_batches: int, autocast: Any) -> None:
    """One optimizer step over the micro-batches in `group`, with its metrics line."""
    import torch

    t, loop, device, world = run.cfg.train, run.loop, run.device, run.world
    began = time.perf_counter()
    pad = run.tokenizer.pad_token_id
    mine = shard(group, world, t.batch_size)

    def labels(n: int) -> int:
        return round(all_sum([n], world)[0])

    loss_sum, n_labels, tokens = batch_loss(run.model, mine, pad, t.batching == "packing", device, autocast, labels)
    sum_gradients(run.trainable, world)
    loss_sum, all_tokens = all_sum([loss_sum, tokens], world)
    tokens = round(all_tokens)
    if t.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(run.trainable, t.max_grad_norm)
    lr = run.scheduler.get_last_lr()[0]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    took = time.perf_counter() - began
    loop.step, loop.tokens, loop.seconds = loop.step + 1, loop.tokens + tokens, loop.seconds + took
    run.last_loss = loss_sum / max(n_labels, 1)
    if not world.main:
        return
    eta = run.progress.eta(loop.step) if run.progress is not None else None
    append_metric(run.run_dir, {
        "step": loop.step, "epoch": round(loop.epoch + loop.micro / n_batches, 4), "loss": run.last_loss, "lr": lr,
        "tokens": tokens, "label_tokens": n_labels, "tokens_per_s": round(tokens / took, 1),
        "seconds": round(took, 4), "peak_mem_mb": peak_memory_mb(device), "total_steps": run.total,
        "eta_s": round(eta, 1) if eta is not None else None,
    })  # fmt: skip
    if run.progress is not None:
        run.progress.update(loop.step, run.last_loss, lr, tokens / took)


def train_loop(run: _Run, stop_after: int | None = None) -> None:
    """Optimizer steps until the schedule ends (or after `stop_after` steps of this call), with a validation loss
    every `train.eval_every` steps and a checkpoint every `train.save_every`."""
    import torch

    from finetune.training.trainset import epoch_batches

    t, loop = run.cfg.train, run.loop
    autocast = torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.bf16)
    ran = 0

    def going() -> bool:
        return loop.step < run.total and (stop_after is None or ran < stop_after)

    run.model.train()
    run.progress = TrainProgress(run.total, loop.step, enabled=run.world.main)
    while going():
        batches = epoch_batches(run.rows, t.batch_size, t.batching, t.seed, loop.epoch)
        while loop.micro < len(batches) and going():
            group = batches[loop.micro : loop.micro + t.grad_accum]
            loop.micro += len(group)
            _step(run, group, len(batches), autocast)
            ran += 1
            evaluated = t.eval_every and loop.step % t.eval_every == 0 and loop.step < run.total
            saved = t.save_every and loop.step % t.save_every == 0 and loop.step < run.total
            if evaluated:
                run.val_loss = run.validate()
            if saved:
                run.save()
            if evaluated or saved:
                run.plot()
        if loop.micro >= len(batches):
            loop.epoch, loop.micro = loop.epoch + 1, 0
    run.progress.close()


def finish(run: _Run) -> TrainResult:
    """After the last step: the final validation loss and checkpoint, the adapter and tokenizer in the run
    directory, train_summary.json and the loss curve."""
    loop = run.loop
    if run.last_loss is None:  # resumed from the final checkpoint: nothing left to train
        run.last_loss = next((r["loss"] for r in reversed(read_metrics(run.run_dir)) if "loss" in r), None)
    run.val_loss = run.validate()
    run.save()
    if not run.world.main:
        return run.result()
    write_final(run.run_dir, run.model, run.tokenizer)
    summary = {
        "steps": loop.step, "epochs": round(loop.step / run.per_epoch, 3), "train_loss": run.last_loss,
        "val_loss": run.val_loss, "tokens": loop.tokens, "train_seconds": round(loop.seconds, 2),
        "tokens_per_s": loop.rate(), "trainable_parameters": sum(p.numel() for p in run.trainable),
        "peak_mem_mb": peak_memory_mb(run.device), "device": str(run.device), "bf16": run.bf16,
        "base_model": str(run.base), "train_examples": len(run.train_ex), "val_examples": len(run.val_ex),
        "rows": len(run.rows), "resumed_from": run.resumed,
    }  # fmt: skip
    write_json(run.run_dir / SUMMARY_FILE, summary)
    _plot(run.run_dir)
    return run.result(summary)


def _plot(run_dir: Path) -> None:
    try:
        from finetune.evaluation.plots import plot_loss_curve

        plot_loss_curve(run_dir)
    except Exception as exc:  # a plot is a convenience; never lose a run to it
        log.warning("could not draw the loss curve: %s", exc)


def train(cfg: Config, restart: bool = False, stop_after: int | None = None) -> TrainResult:
    """Train `cfg` into `cfg.output_dir`, resuming from its last checkpoint unless `restart`: setup, loop, finish.

    `stop_after` ends the loop after that many steps of this call, as an interruption would (for tests).
    Under torchrun or accelerate launch each process trains its share of every step (see distributed.py).
    On Ctrl-C the loss curve so far is drawn before the interruption goes on.
    """
    run = setup(cfg, restart)
    try:
        try:
            train_loop(run, stop_after)
        except KeyboardInterrupt:
            run.plot()
            raise
        if run.loop.step < run.total:  # stopped on request: leave a checkpoint to resume from
            run.save()
            result = run.result()
        else:
            result = finish(run)
        barrier(run.world)
        return result
    finally:
        stop(run.world)
