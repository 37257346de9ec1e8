"""A policy stored in bf16 (LeRobot dtype: bfloat16) trains float32 master weights under bf16
autocast: a 2.5e-5 update moves them (in bf16 it would round away); frozen weights stay bf16."""

from __future__ import annotations

import torch

from snapflow_distill.synthetic import make_dataset, task_config
from snapflow_distill.trainer import TrainConfig, Trainer
from snapflow_ros.families.builtin import BuiltinVLA


def test_bf16_policy_trains_float32_master_weights(tmp_path):
    data = make_dataset(32, seed=3)[0]
    torch.manual_seed(0)
    policy = BuiltinVLA(task_config(width=32, num_layers=1))
    policy.state_normalizer.fit(data.states)
    policy.action_normalizer.fit(data.actions)
    policy = policy.to(torch.bfloat16)
    frozen_before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    config = TrainConfig(objective="snapflow", steps=1, batch_size=8, learning_rate=2.5e-5, warmup_steps=0)
    trainer = Trainer(policy, data, config, tmp_path)
    trained = dict(zip(trainer.parameter_names, trainer.parameters))
    assert trained and all(p.dtype == torch.float32 for p in trained.values())
    before = {n: p.detach().clone() for n, p in trained.items()}

    terms = trainer.train_step()
    assert torch.isfinite(terms.total) and terms.total.dtype == torch.float32

    after = torch.cat([trained[n].detach().flatten() for n in trained])
    start = torch.cat([before[n].flatten() for n in trained])
    moved = after != start
    assert moved.float().mean() > 0.5
    # Most of those moves are below bf16 resolution: a bf16 weight would not have changed.
    assert (after[moved].bfloat16().float() == start[moved]).float().mean() > 0.5
    for name, p in policy.named_parameters():
        if name not in trained:
            assert p.dtype == torch.bfloat16 and torch.equal(p, frozen_before[name]), name
