"""Per-action flow time through the velocity contract (issue 17's first step): t and s of shape
(B,) give exactly today's velocity; (B, H) runs (pi0.5: its adaRMS conditioned per token), and a
committed prefix at t = s = 0 changes what the prefix tokens see."""

from __future__ import annotations

import pytest
import torch

from snapflow_distill.synthetic import make_dataset, task_config
from snapflow_ros.families.builtin import BuiltinVLA
from snapflow_ros.families.lerobot.builders import build_lerobot_checkpoint
from snapflow_ros.families.registry import load_policy


@pytest.fixture(scope="module")
def data():
    return make_dataset(32, seed=3)[0]


@pytest.fixture(scope="module")
def policies(data, tmp_path_factory):
    torch.manual_seed(0)
    builtin = BuiltinVLA(task_config(width=32, num_layers=2))
    root = tmp_path_factory.mktemp("per_action")
    out = {"builtin": builtin}
    for family in ("pi0", "smolvla", "pi05"):
        out[family] = load_policy(build_lerobot_checkpoint(
            family, root / family, states=data.states, actions=data.actions, cameras=("front",),
            instructions=data.instructions, chunk_size=8))
    for policy in out.values():
        policy.eval()
        with torch.no_grad():  # a trained phi, so s matters
            policy.target_time.linear_out.weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(1))
    return out


def _inputs(policy, data, batch: int = 3):
    cache = policy.embed_prefix(policy.prepare(data.batch(torch.arange(batch))))
    x = torch.randn(batch, policy.chunk_size, policy.noise_dim, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0.9, 0.5, 0.2])
    s = torch.tensor([0.0, 0.1, 0.0])
    return cache, x, t, s


@pytest.mark.parametrize("family", ["builtin", "pi0", "smolvla", "pi05"])
def test_per_action_time_runs_and_per_sample_time_is_unchanged(policies, data, family):
    policy = policies[family]
    with torch.no_grad():
        cache, x, t, s = _inputs(policy, data)
        per_sample = policy.velocity(x, t, s, cache)
        horizon = policy.chunk_size
        expanded = policy.velocity(x, t[:, None].expand(-1, horizon), s[:, None].expand(-1, horizon), cache)
        torch.testing.assert_close(expanded, per_sample, rtol=0, atol=1e-5)  # the same times, per action
        d = 2  # a committed prefix of two clean actions at t = s = 0
        t_prefix, s_prefix = t[:, None].repeat(1, horizon), s[:, None].repeat(1, horizon)
        t_prefix[:, :d] = 0.0
        s_prefix[:, :d] = 0.0
        conditioned = policy.velocity(x, t_prefix, s_prefix, cache)
    assert conditioned.shape == per_sample.shape and torch.isfinite(conditioned).all()
    assert not torch.allclose(conditioned[:, :d], per_sample[:, :d], atol=1e-4)  # the prefix tokens see t = 0


def test_per_sample_time_is_bit_identical_to_the_embedding_before(policies, data):
    """(B,) takes the old code path: the sinusoid of a 1-D time is the same tensor as before."""
    from snapflow_ros.flow.time import sinusoidal_time_embedding

    t = torch.rand(7, generator=torch.Generator().manual_seed(4))
    per_sample = sinusoidal_time_embedding(t, 32)
    per_action = sinusoidal_time_embedding(t[:, None].expand(-1, 5), 32)
    assert per_sample.shape == (7, 32) and per_action.shape == (7, 5, 32)
    assert torch.equal(per_action[:, 3], per_sample)
