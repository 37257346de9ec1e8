"""The losses, as snapflow-method.md writes them (t = 1 noise, t = 0 data).

    L_FM = || F(x_t, t, s=t | c) - (eps - a) ||^2,   x_t = t*eps + (1-t)*a
    L_SD = || F(x1, t=1, s=0 | c) - sg[0.5*(v1 + vh)] ||^2   (two-step Euler shortcut)
    L    = alpha*L_FM + (1-alpha)*lambda*L_SD   with a fixed-size per-sample split
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from snapflow_ros.flow.time import sample_flow_time
from snapflow_ros.policy.contract import FlowPolicy, PrefixCache


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
               action_dim: int) -> torch.Tensor:
    """Mean squared error over valid (B, H) action positions and the first action_dim dims
    (LeRobot models pad actions to 32 dims; the padding is not part of the loss). Computed in
    float32: under bf16 autocast the squared errors of a trained model round to a few digits."""
    prediction, target = prediction[..., :action_dim].float(), target[..., :action_dim].float()
    weights = mask.to(prediction.dtype)[..., None].expand_as(prediction)
    return ((prediction - target) ** 2 * weights).sum() / weights.sum().clamp_min(1.0)


def expert_pass(policy: FlowPolicy, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor,
                cache: PrefixCache) -> torch.Tensor:
    """policy.velocity, recomputed in backward instead of stored when the policy asks for
    gradient checkpointing (large experts), unless the policy recomputes layer by layer itself."""
    if policy.gradient_checkpointing and not policy.checkpoints_layers and torch.is_grad_enabled():
        return checkpoint(policy.velocity, x, t, s, cache, use_reentrant=False)
    return policy.velocity(x, t, s, cache)


def flow_matching_loss(policy: FlowPolicy, cache: PrefixCache, actions: torch.Tensor,
                       mask: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The teacher's own training loss: instantaneous velocity (s = t) against eps - a."""
    t_b = t[:, None, None]
    x_t = t_b * noise + (1.0 - t_b) * actions
    return masked_mse(expert_pass(policy, x_t, t, t, cache), noise - actions, mask, policy.action_dim)


@torch.no_grad()
def consistency_target(policy: FlowPolicy, cache: PrefixCache, x1: torch.Tensor) -> torch.Tensor:
    """0.5 * (v1 + vh): the average velocity of the model's own two-step Euler rollout from x1."""
    ones = torch.ones(x1.shape[0], dtype=x1.dtype, device=x1.device)
    v1 = policy.velocity(x1, ones, ones, cache)
    x_half = x1 - 0.5 * v1
    v_half = policy.velocity(x_half, 0.5 * ones, 0.5 * ones, cache)
    return 0.5 * (v1 + v_half)


def consistency_loss(policy: FlowPolicy, cache: PrefixCache, noise: torch.Tensor,
                     mask: torch.Tensor) -> torch.Tensor:
    """The one-step jump F(x1, t=1, s=0) regressed on the stop-gradient shortcut target."""
    target = consistency_target(policy, cache, noise)
    ones = torch.ones(noise.shape[0], dtype=noise.dtype, device=noise.device)
    return masked_mse(expert_pass(policy, noise, ones, torch.zeros_like(ones), cache), target, mask,
                      policy.action_dim)


@dataclass(frozen=True)
class LossTerms:
    total: torch.Tensor
    flow_matching: torch.Tensor
    consistency: torch.Tensor


def snapflow_loss(policy: FlowPolicy, cache: PrefixCache, actions: torch.Tensor, mask: torch.Tensor,
                  alpha: float, consistency_weight: float, generator: torch.Generator) -> LossTerms:
    """Routes round(alpha*B) random samples to flow matching and the rest to consistency.

    The prefix cache is computed once by the caller and shared by every expert pass.
    """
    batch = actions.shape[0]
    device = actions.device
    order = torch.randperm(batch, generator=generator).to(device)
    n_fm = int(round(alpha * batch))
    fm_index, sd_index = order[:n_fm], order[n_fm:]
    zero = actions.new_zeros(())
    fm = sd = zero
    if n_fm:
        noise = torch.randn(actions[fm_index].shape, generator=generator).to(device)
        t = sample_flow_time(n_fm, generator).to(device)
        fm = flow_matching_loss(policy, cache.select(fm_index), actions[fm_index], mask[fm_index], noise, t)
    if n_fm < batch:
        noise = torch.randn(actions[sd_index].shape, generator=generator).to(device)
        sd = consistency_loss(policy, cache.select(sd_index), noise, mask[sd_index])
    # Fixed-size split: alpha*mean_FM + (1-alpha)*mean_SD is the per-sample routing expectation.
    share = n_fm / batch
    total = share * fm + (1.0 - share) * consistency_weight * sd
    return LossTerms(total, fm.detach(), sd.detach())
