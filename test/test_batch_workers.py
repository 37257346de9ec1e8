"""--workers: DataLoader processes fetch the samples of a dataset that is not in memory, and the
trainer sees the same batches, losses and weights as without workers, resumed runs included."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from snapflow_distill.synthetic import make_dataset, task_config
from snapflow_distill.trainer import TrainConfig, Trainer
from snapflow_ros.data.chunks import ChunkSample, InMemoryChunkDataset
from snapflow_ros.families.builtin import BuiltinVLA
from snapflow_ros.families.registry import load_policy


class SampleBySample:
    """Like decoded frames: no batch(), one sample at a time; notes the process that read it."""

    def __init__(self, data: InMemoryChunkDataset, readers: Path) -> None:
        self.data, self.readers = data, readers
        readers.mkdir(parents=True, exist_ok=True)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> ChunkSample:
        (self.readers / str(os.getpid())).touch()
        return self.data[index]


class Crash(Exception):
    pass


def _run(data, out: Path, workers: int, crash_at: int | None = None) -> Path:
    torch.manual_seed(0)
    policy = BuiltinVLA(task_config(width=16, num_heads=2, num_layers=1))
    policy.state_normalizer.fit(data.states)
    policy.action_normalizer.fit(data.actions)
    config = TrainConfig(objective="snapflow", steps=4, batch_size=4, warmup_steps=1, checkpoint_every=2,
                         log_every=1, workers=workers)

    def crash(progress) -> None:
        if progress.step == crash_at:
            raise Crash

    return Trainer(policy, SampleBySample(data, out / "readers"), config, out, progress=crash).run()


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _readers(out: Path) -> set[int]:
    return {int(p.name) for p in (out / "readers").iterdir()}


def test_workers_give_the_batches_of_the_training_step(tmp_path):
    data = make_dataset(32, seed=3)[0]
    without = _run(data, tmp_path / "without", workers=0)
    with_workers = _run(data, tmp_path / "with", workers=2)
    assert _readers(tmp_path / "without") == {os.getpid()}
    assert len(_readers(tmp_path / "with")) == 2 and os.getpid() not in _readers(tmp_path / "with")
    assert _losses(tmp_path / "with") == _losses(tmp_path / "without")
    a, b = load_policy(without).state_dict(), load_policy(with_workers).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    # Crash after the step-2 checkpoint without workers, resume with them: the same run.
    with pytest.raises(Crash):
        _run(data, tmp_path / "resumed", workers=0, crash_at=3)
    resumed = load_policy(_run(data, tmp_path / "resumed", workers=2)).state_dict()
    assert all(torch.equal(a[k], resumed[k]) for k in a)
