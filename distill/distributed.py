"""Data parallelism through torchrun: torch.distributed + DistributedDataParallel, nothing else.

    torchrun --nproc_per_node=4 -m snapflow_ros.cli.main distill TEACHER --output RUN

Each rank draws its own batches; DDP averages gradients, so the effective batch is
world_size * batch_size. Rank 0 alone logs and writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> DistributedContext:
        """Reads torchrun's variables; initialises the process group once (NCCL on CUDA, else gloo)
        and makes cuda:LOCAL_RANK this process's current device."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available()
        if cuda:
            # NCCL collectives (all_gather_object too) run on the current device, not cuda:0.
            torch.cuda.set_device(local_rank)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), local_rank)

    def default_device(self) -> torch.device:
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank if self.enabled else 0)
        return torch.device("cpu")

    def gather(self, value: object) -> list[object]:
        """Every rank's `value`, in rank order (on every rank)."""
        if not self.enabled:
            return [value]
        values: list[object] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()
