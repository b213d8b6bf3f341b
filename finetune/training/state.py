"""What a run keeps on disk besides metrics: the loop position, checkpoints (weights, optimizer, RNG) and the
final adapter."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.training.runio import move_files_into, save_checkpoint, write_dir, write_json, writing


@dataclass
class Loop:
    """What a checkpoint holds besides weights: where in the data the run is, and its running totals."""

    step: int = 0
    epoch: int = 0
    micro: int = 0  # next micro-batch of the epoch
    tokens: int = 0
    seconds: float = 0.0

    def rate(self) -> float:
        return round(self.tokens / self.seconds, 1) if self.seconds else 0.0


def save_state(run_dir: Path, loop: Loop, model: Any, optimizer: Any, scheduler: Any, device: Any, keep: int) -> None:
    import torch

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        torch.save({"cpu": torch.get_rng_state(), "cuda": cuda}, tmp / "rng.pt")
        write_json(tmp / "state.json", loop.__dict__)  # last: a checkpoint counts only once state.json exists

    save_checkpoint(run_dir, loop.step, fill, keep)


def restore_state(ckpt: Path, model: Any, optimizer: Any, scheduler: Any, device: Any) -> Loop:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(ckpt / "adapter_model.safetensors"), device=str(device)))
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location=device, weights_only=True))
    scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))
    rng = torch.load(ckpt / "rng.pt", weights_only=False)
    torch.set_rng_state(rng["cpu"])
    if device.type == "cuda" and rng.get("cuda") is not None:
        torch.cuda.set_rng_state(rng["cuda"], device)
    return Loop(**json.loads((ckpt / "state.json").read_text(encoding="utf-8")))


def write_final(run_dir: Path, model: Any, tokenizer: Any) -> None:
    """Adapter and tokenizer into the run directory, each file renamed into place, adapter_config.json last
    (its presence is what marks a finished run for eval and merge)."""

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").unlink(missing_ok=True)  # peft's empty model card

    final = write_dir(run_dir / ".final", fill)
    with writing(run_dir):
        move_files_into(final, run_dir, last="adapter_config.json")
        final.rmdir()
