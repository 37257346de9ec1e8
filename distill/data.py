"""The trainer's batches: collating (observation, action chunk) samples into a RawBatch and the
seeded index stream that picks them. The sample and dataset types are the core's
(snapflow_ros.data.chunks), shared with the producers of data."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader

from snapflow_ros.data.chunks import ChunkDataset, ChunkSample
from snapflow_ros.policy.contract import RawBatch


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
