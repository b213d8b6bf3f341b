"""Data-parallel training across the processes `torchrun` or `accelerate launch` starts: ranks, shards, sums.

Each optimizer step's micro-batches (the global batch, batch_size x grad_accum rows, the same as one process
would take) are dealt out row by row to the ranks; every rank scales its loss by the label tokens of the whole
global batch, and the LoRA gradients are summed across ranks before the step. The update is therefore the one a
single process makes, up to float summation order. Only rank 0 writes metrics, checkpoints and outputs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from finetune.training.trainset import Example

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 when run directly)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1


def world_from_env() -> World:
    """Read RANK, WORLD_SIZE and LOCAL_RANK, which torchrun and accelerate launch set for each process."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return World()
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


def start(world: World, device: Any) -> Any:
    """Join the process group (gloo on CPU, nccl on CUDA); returns the device this rank trains on."""
    import torch
    import torch.distributed as dist

    if not world.parallel:
        return device
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    log.info("rank %d of %d on %s (%s)", world.rank, world.size, device, dist.get_backend())
    return device


def stop(world: World) -> None:
    import torch.distributed as dist

    if world.parallel and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.parallel:
        import torch.distributed as dist

        dist.barrier()


def shard(group: list[list[list[Example]]], world: World, batch_size: int) -> list[list[list[Example]]]:
    """This rank's part of one optimizer step's micro-batches: every size-th row from its rank on, re-batched
    into micro-batches of `batch_size` rows (a rank may get none at the end of an epoch)."""
    if not world.parallel:
        return group
    rows = [row for batch in group for row in batch][world.rank :: world.size]
    return [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]


def all_sum(values: list[float], world: World) -> list[float]:
    """Each value summed over the ranks (the same list back on one process)."""
    if not world.parallel:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return [float(v) for v in t]


def sum_gradients(params: list[Any], world: World) -> None:
    """Sum each parameter's gradient over the ranks, in place (a rank that saw no row adds zeros)."""
    if not world.parallel:
        return
    import torch
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)


def broadcast(params: list[Any], world: World) -> None:
    """Rank 0's values into every rank's parameters (the LoRA weights start the same everywhere)."""
    if not world.parallel:
        return
    import torch
    import torch.distributed as dist

    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=0)
