"""Prefix-conditioned SnapFlow (training-time real-time chunking): d = 0 is exactly the plain loss;
with a prefix every pass sees the clean committed actions at t = s = 0, the consistency target
does not move them, and they are left out of the loss."""

from __future__ import annotations

import pytest
import torch

from snapflow_distill.loss import consistency_target, flow_matching_loss, snapflow_loss
from snapflow_distill.synthetic import make_dataset, task_config
from snapflow_distill.trainer import TrainConfig, Trainer
from snapflow_ros.errors import ConfigError
from snapflow_ros.families.builtin import BuiltinVLA
from snapflow_ros.flow.prefix import CommittedPrefix
from snapflow_ros.flow.sampling import euler_sample


@pytest.fixture(scope="module")
def setup():
    data = make_dataset(32, seed=3)[0]
    torch.manual_seed(0)
    policy = BuiltinVLA(task_config(width=32, num_layers=1))
    policy.state_normalizer.fit(data.states)
    policy.action_normalizer.fit(data.actions)
    with torch.no_grad():  # s matters
        policy.target_time.linear_out.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    inputs = policy.prepare(data.batch(torch.arange(8)))
    with torch.no_grad():
        cache = policy.embed_prefix(inputs)
    return data, policy, inputs, cache


def test_max_delay_zero_is_the_plain_loss_bit_for_bit(setup):
    _, policy, inputs, cache = setup
    plain = snapflow_loss(policy, cache, inputs["actions"], inputs["action_mask"], 0.5, 0.1,
                          torch.Generator().manual_seed(7))
    off = snapflow_loss(policy, cache, inputs["actions"], inputs["action_mask"], 0.5, 0.1,
                        torch.Generator().manual_seed(7), max_delay=0)
    assert torch.equal(plain.total, off.total) and torch.equal(plain.consistency, off.consistency)


def test_a_prefix_of_zero_actions_gives_the_plain_terms(setup):
    """The prefix path itself, with every d = 0: per-action times equal to the per-sample ones."""
    _, policy, inputs, cache = setup
    a, mask = inputs["actions"], inputs["action_mask"]
    none = CommittedPrefix(a, torch.zeros(a.shape[0], dtype=torch.long))
    g = torch.Generator().manual_seed(2)
    eps, t = torch.randn(a.shape, generator=g), torch.rand(a.shape[0], generator=g)
    with torch.no_grad():
        torch.testing.assert_close(flow_matching_loss(policy, cache, a, mask, eps, t, none),
                                   flow_matching_loss(policy, cache, a, mask, eps, t), rtol=0, atol=1e-7)
        torch.testing.assert_close(consistency_target(policy, cache, eps, none),
                                   consistency_target(policy, cache, eps), rtol=0, atol=1e-7)


def test_with_a_prefix_the_committed_actions_are_clean_at_time_zero_and_out_of_the_loss(setup):
    _, policy, inputs, cache = setup
    a, mask = inputs["actions"], inputs["action_mask"]
    delays = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    prefix = CommittedPrefix(a, delays)
    assert prefix.positions.sum().item() == int(delays.sum())
    t = prefix.times(torch.full((8,), 0.7))
    assert torch.all(t[prefix.positions] == 0) and torch.all(t[~prefix.positions] == 0.7)
    eps = torch.randn(a.shape, generator=torch.Generator().manual_seed(3))
    x = prefix.apply(eps)
    assert torch.equal(x[prefix.positions], a[prefix.positions]) and torch.equal(x[~prefix.positions],
                                                                                 eps[~prefix.positions])
    seen = []

    def recording_velocity(x_in, t_in, s_in, c):  # every pass: the committed actions clean at t = s = 0
        seen.append((x_in.detach().clone(), t_in.clone(), s_in.clone()))
        return BuiltinVLA.velocity(policy, x_in, t_in, s_in, c)

    policy.velocity = recording_velocity
    try:
        fm = flow_matching_loss(policy, cache, a, mask, eps, torch.full((8,), 0.7), prefix)
        consistency_target(policy, cache, prefix.apply(eps), prefix)
    finally:
        del policy.velocity
    assert len(seen) == 3  # flow matching, then both points of the two-step target
    for x_in, t_in, s_in in seen:
        assert t_in.shape == s_in.shape == (8, a.shape[1])
        assert torch.all(t_in[prefix.positions] == 0) and torch.all(s_in[prefix.positions] == 0)
        torch.testing.assert_close(x_in[prefix.positions], a[prefix.positions])
    # Out of the loss: changing what the model would have to predict on the prefix changes nothing.
    eps_changed = eps.clone()
    eps_changed[prefix.positions] += 5.0
    torch.testing.assert_close(flow_matching_loss(policy, cache, a, mask, eps_changed, torch.full((8,), 0.7),
                                                  prefix), fm)


def test_training_with_a_prefix_runs_and_max_delay_is_checked(setup, tmp_path):
    data, policy, _, _ = setup
    trainer = Trainer(policy, data, TrainConfig(objective="snapflow", steps=2, batch_size=8, max_delay=3,
                                                checkpoint_every=0), tmp_path / "run")
    terms = trainer.train_step()
    assert torch.isfinite(terms.total)
    with pytest.raises(ConfigError, match="max_delay 8 leaves nothing"):
        Trainer(policy, data, TrainConfig(objective="snapflow", max_delay=8), tmp_path / "bad")


@pytest.mark.parametrize("steps", [1, 10])
def test_sampling_keeps_the_committed_prefix_and_without_one_is_unchanged(setup, steps):
    _, policy, inputs, cache = setup
    a = inputs["actions"]
    noise = torch.randn(a.shape, generator=torch.Generator().manual_seed(5))
    delays = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    with torch.no_grad():
        plain = euler_sample(policy, cache, noise, steps)
        conditioned = euler_sample(policy, cache, noise, steps, CommittedPrefix(a, delays))
        no_prefix = euler_sample(policy, cache, noise, steps, CommittedPrefix(a, torch.zeros(8, dtype=torch.long)))
    positions = CommittedPrefix(a, delays).positions
    assert torch.equal(conditioned[positions], a[positions])  # the chunk starts with what was committed
    assert not torch.allclose(conditioned[~positions], plain[~positions])  # and the rest depends on it
    torch.testing.assert_close(no_prefix, plain, rtol=0, atol=1e-6)
