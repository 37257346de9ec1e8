"""Run by test_distributed.py under torchrun (2 CPU processes, gloo): one SnapFlow step."""

import sys
from pathlib import Path

import torch

from snapflow_distill.distributed import DistributedContext
from snapflow_distill.synthetic import make_dataset, task_config
from snapflow_distill.trainer import TrainConfig, Trainer
from snapflow_ros.families.builtin import BuiltinVLA


def policy(seed: int, data) -> BuiltinVLA:
    torch.manual_seed(seed)
    p = BuiltinVLA(task_config(width=32, num_layers=1))
    p.state_normalizer.fit(data.states)
    p.action_normalizer.fit(data.actions)
    return p


def main(out: Path) -> None:
    ctx = DistributedContext.from_env()
    assert ctx.world_size == 2
    data = make_dataset(64, seed=3)[0]
    config = TrainConfig(objective="snapflow", steps=1, batch_size=8, warmup_steps=1)
    # Different initial weights per rank: DDP must broadcast rank 0's.
    trainer = Trainer(policy(ctx.rank, data), data, config, out / f"rank{ctx.rank}")
    trainer.train_step()
    flat = torch.cat([p.detach().flatten() for p in trainer.parameters])
    gathered = ctx.gather(flat)
    if ctx.is_main:
        assert torch.equal(gathered[0], gathered[1]), "ranks diverged: gradients not averaged"
        alone = Trainer(policy(0, data), data, config, out / "alone", distributed=DistributedContext())
        alone.train_step()
        alone_flat = torch.cat([p.detach().flatten() for p in alone.parameters])
        assert not torch.allclose(alone_flat, gathered[0]), "rank 1's batch had no effect"
        (out / "ok").write_text("ok")
    ctx.barrier()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
