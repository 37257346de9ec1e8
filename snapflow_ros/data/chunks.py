"""(observation, action chunk) samples: one sample's shape, a dataset's interface, and the
in-memory dataset that recordings materialise into. Producers (bags, LeRobot, the synthetic task)
and the trainer both speak these, so they sit below both."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypedDict

import torch

from snapflow_ros.errors import ConfigError
from snapflow_ros.policy.contract import RawBatch


class ChunkSample(TypedDict):
    images: dict[str, torch.Tensor]  # camera -> (H, W, 3) uint8
    instruction: str
    state: torch.Tensor              # (state_dim,)
    actions: torch.Tensor            # (chunk_size, action_dim)
    action_mask: torch.Tensor        # (chunk_size,) bool, False past the episode end


class ChunkDataset(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> ChunkSample: ...


@dataclass
class InMemoryChunkDataset:
    """All samples as stacked tensors (synthetic tasks, small recorded sets)."""

    images: dict[str, torch.Tensor]  # camera -> (N, H, W, 3) uint8
    instructions: list[str]
    states: torch.Tensor             # (N, state_dim)
    actions: torch.Tensor            # (N, chunk_size, action_dim)
    action_masks: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.states.shape[0]
        sizes = {"instructions": len(self.instructions), "actions": self.actions.shape[0],
                 **{f"images[{c}]": v.shape[0] for c, v in self.images.items()}}
        bad = {k: v for k, v in sizes.items() if v != n}
        if bad:
            raise ConfigError(f"dataset fields disagree on the sample count {n}: {bad}")
        if self.action_masks is None:
            self.action_masks = torch.ones(self.actions.shape[:2], dtype=torch.bool)

    def __len__(self) -> int:
        return int(self.states.shape[0])

    def __getitem__(self, index: int) -> ChunkSample:
        return ChunkSample(
            images={c: v[index] for c, v in self.images.items()},
            instruction=self.instructions[index],
            state=self.states[index],
            actions=self.actions[index],
            action_mask=self.action_masks[index],
        )

    def batch(self, index: torch.Tensor) -> RawBatch:
        """Vectorised collate for in-memory data."""
        return RawBatch(
            images={c: v[index] for c, v in self.images.items()},
            instruction=[self.instructions[i] for i in index.tolist()],
            state=self.states[index],
            actions=self.actions[index],
            action_mask=self.action_masks[index],
        )

    def split(self, holdout: int) -> tuple[InMemoryChunkDataset, InMemoryChunkDataset]:
        """(train, held-out) with the last `holdout` samples held out."""
        if not 0 < holdout < len(self):
            raise ConfigError(f"holdout must be in 1..{len(self) - 1}, got {holdout}")
        cut = len(self) - holdout

        def part(sl: slice) -> InMemoryChunkDataset:
            return InMemoryChunkDataset({c: v[sl] for c, v in self.images.items()},
                                        self.instructions[sl], self.states[sl], self.actions[sl],
                                        self.action_masks[sl])

        return part(slice(0, cut)), part(slice(cut, None))
