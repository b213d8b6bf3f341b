"""One training or evaluation step's arithmetic: device and precision, loss on assistant tokens only, memory."""

from __future__ import annotations

import logging
import resource
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from finetune.training.config import TrainConfig
from finetune.training.runio import RunError
from finetune.training.trainset import IGNORE, Example, collate, epoch_batches, pack

log = logging.getLogger(__name__)


def pick_device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"train.device={name}: no CUDA GPU here; use train.device=cpu (or auto)")
    return device


def use_bf16(setting: str, device: Any) -> bool:
    """bf16 autocast on a GPU that supports it; CPUs train in float32 (bf16 matmuls are slow without AMX)."""
    import torch

    supported = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if setting == "true" and not supported:
        log.warning("train.bf16=true but %s has no bf16 support; training in float32", device)
    return supported and setting != "false"


def peak_memory_mb(device: Any) -> float:
    """Peak GPU memory allocated on CUDA; the process's peak resident memory on CPU."""
    import torch

    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _head_and_body(model: Any) -> tuple[Any, Any] | None:
    """(decoder, lm_head) when logits are a plain projection of the last hidden state, so that the loss can
    project only the positions that carry a label: with a 262k vocabulary the head is most of the compute."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = inner.config
    if any(getattr(config, a, None) for a in ("logit_scale", "logits_scaling", "output_multiplier_scale")):
        return None
    body, head = getattr(inner, "model", None), inner.get_output_embeddings()
    if body is None or head is None:
        return None
    return body, head


def token_losses(model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """(cross-entropy of every next-token label, the batch row each belongs to) for one collated micro-batch."""
    import torch
    import torch.nn.functional as F

    labels = batch["labels"][:, 1:]
    keep = labels != IGNORE
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    parts = _head_and_body(model)
    if parts is None:
        logits = model(**inputs, use_cache=False).logits[:, :-1][keep]
    else:
        body, head = parts
        hidden = body(**inputs, use_cache=False).last_hidden_state[:, :-1][keep]
        logits = head(hidden)
        cap = getattr(getattr(body, "config", None), "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
    return F.cross_entropy(logits.float(), labels[keep], reduction="none"), keep.nonzero()[:, 0]


def lm_loss(model: Any, batch: dict[str, Any]) -> tuple[Any, int]:
    """(summed cross-entropy over the next-token labels, how many labels) for one collated micro-batch."""
    losses, _ = token_losses(model, batch)
    return losses.sum(), int(losses.numel())


def _to(batch: dict[str, Any], device: Any) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if hasattr(v, "to") else v for k, v in batch.items()}


def batch_loss(
    model: Any,
    group: list[list[list[Example]]],
    pad_id: int,
    packed: bool,
    device: Any,
    autocast: AbstractContextManager[Any],
    global_labels: Callable[[int], int] | None = None,
) -> tuple[float, int, int]:
    """Forward and backward over the micro-batches of one optimizer step, the loss averaged over all their
    label tokens (not per micro-batch, so gradient accumulation equals one big batch). `global_labels` turns this
    process's label count into the whole step's (data-parallel ranks sum theirs). Returns (this process's summed
    loss, the step's label tokens, this process's input tokens)."""
    batches = [collate(b, pad_id, packed) for b in group]
    total = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in batches)
    if global_labels is not None:
        total = global_labels(total)
    loss_sum, tokens = 0.0, 0
    for b in batches:
        tokens += b.pop("tokens")
        with autocast:
            loss, _ = lm_loss(model, _to(b, device))
        (loss / max(total, 1)).backward()
        loss_sum += float(loss.detach())
    return loss_sum, total, tokens


def mean_loss(model: Any, examples: list[Example], t: TrainConfig, device: Any, bf16: bool, pad_id: int) -> float:
    """Mean loss per label token over `examples` (packing keeps examples apart, so it matches unpacked)."""
    import torch

    packed = t.batching == "packing"
    rows = pack(examples, t.max_seq_len) if packed else [[e] for e in examples]
    total = count = 0.0
    was_training = model.training
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for group in epoch_batches(rows, t.batch_size, "length" if not packed else t.batching, 0, 0):
            b = collate(group, pad_id, packed)
            b.pop("tokens")
            loss, n = lm_loss(model, _to(b, device))
            total += float(loss)
            count += n
    if was_training:
        model.train()
    return total / max(count, 1)
