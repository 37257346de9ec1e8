"""Datasets of (observation, action chunk) samples and the collation into a RawBatch."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, TypedDict

import torch
from torch.utils.data import DataLoader

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


def collate(samples: list[ChunkSample]) -> RawBatch:
    return RawBatch(
        images={c: torch.stack([s["images"][c] for s in samples]) for c in samples[0]["images"]},
        instruction=[s["instruction"] for s in samples],
        state=torch.stack([s["state"] for s in samples]),
        actions=torch.stack([s["actions"] for s in samples]),
        action_mask=torch.stack([s["action_mask"] for s in samples]),
    )


def fetch_batch(dataset: ChunkDataset, index: torch.Tensor) -> RawBatch:
    """Datasets held in memory batch themselves (vectorised); others collate sample by sample."""
    batch = getattr(dataset, "batch", None)
    if batch is not None:
        return batch(index)
    return collate([dataset[i] for i in index.tolist()])


def draw_index(size: int, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """The (batch_size,) sample indices of one training step, drawn with replacement."""
    return torch.randint(size, (batch_size,), generator=generator)


class _ReplayedIndices:
    """A batch sampler replaying the trainer's index stream from a copy of its generator, so
    workers fetch ahead exactly the batches the trainer will draw."""

    def __init__(self, size: int, batch_size: int, generator_state: torch.Tensor) -> None:
        self.size, self.batch_size = size, batch_size
        self.generator = torch.Generator()
        self.generator.set_state(generator_state)

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            yield draw_index(self.size, self.batch_size, self.generator).tolist()


class BatchLoader:
    """The training batches, at indices drawn from `generator` (the trainer's, checkpointed).

    workers == 0, or a dataset that batches itself in memory: each batch is fetched in the training
    step. workers > 0: a DataLoader's processes decode and collate (video/PNG frames) a few batches
    ahead; its sampler replays the same index stream, so the batches are the same as without.
    """

    def __init__(self, dataset: ChunkDataset, batch_size: int, generator: torch.Generator,
                 workers: int = 0, pin_memory: bool = False) -> None:
        self.dataset, self.batch_size, self.generator = dataset, batch_size, generator
        self.workers = 0 if hasattr(dataset, "batch") else workers
        self.pin_memory = pin_memory
        self._ahead: Iterator[RawBatch] | None = None

    def next(self) -> RawBatch:
        if self.workers and self._ahead is None:
            # Started on first use, after a resume has restored the generator.
            sampler = _ReplayedIndices(len(self.dataset), self.batch_size, self.generator.get_state())
            # Its own generator: worker seeds must not consume the global RNG stream.
            self._ahead = iter(DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.workers,
                                          collate_fn=collate, pin_memory=self.pin_memory,
                                          generator=torch.Generator().manual_seed(0)))
        # Drawn with workers too: the checkpointed generator follows the batches used, not prefetched.
        index = draw_index(len(self.dataset), self.batch_size, self.generator)
        return next(self._ahead) if self._ahead is not None else fetch_batch(self.dataset, index)

    def close(self) -> None:
        """Stops the worker processes (a later next() starts new ones)."""
        self._ahead = None
