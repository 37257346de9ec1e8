"""The losses, as snapflow-method.md writes them (t = 1 noise, t = 0 data).

    L_FM = || F(x_t, t, s=t | c) - (eps - a) ||^2,   x_t = t*eps + (1-t)*a
    L_SD = || F(x1, t=1, s=0 | c) - sg[0.5*(v1 + vh)] ||^2   (two-step Euler shortcut)
    L    = alpha*L_FM + (1-alpha)*lambda*L_SD   with a fixed-size per-sample split

With a committed prefix (training-time real-time chunking, Black et al. 2025): per sample, the
first d ~ U{0..D} actions are the clean ones at flow time t = s = 0 in every expert pass (the
flow-matching one, both passes of the consistency target and the student's jump) and are left
out of the loss; the policy learns to continue a chunk from actions already executed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from snapflow_ros.flow.prefix import CommittedPrefix
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
                       mask: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                       prefix: CommittedPrefix | None = None) -> torch.Tensor:
    """The teacher's own training loss: instantaneous velocity (s = t) against eps - a."""
    if prefix is not None:  # per-action times: x_t is then exactly a on the committed actions
        t, mask = prefix.times(t), prefix.loss_mask(mask)
        t_b = t[..., None]
    else:
        t_b = t[:, None, None]
    x_t = t_b * noise + (1.0 - t_b) * actions
    return masked_mse(expert_pass(policy, x_t, t, t, cache), noise - actions, mask, policy.action_dim)


@torch.no_grad()
def consistency_target(policy: FlowPolicy, cache: PrefixCache, x1: torch.Tensor,
                       prefix: CommittedPrefix | None = None) -> torch.Tensor:
    """0.5 * (v1 + vh): the average velocity of the model's own two-step Euler rollout from x1."""
    ones = torch.ones(x1.shape[0], dtype=x1.dtype, device=x1.device)
    one, half = (ones, 0.5 * ones) if prefix is None else (prefix.times(ones), prefix.times(0.5 * ones))
    v1 = policy.velocity(x1, one, one, cache)
    x_half = x1 - 0.5 * v1
    if prefix is not None:
        x_half = prefix.apply(x_half)
    v_half = policy.velocity(x_half, half, half, cache)
    return 0.5 * (v1 + v_half)


def consistency_loss(policy: FlowPolicy, cache: PrefixCache, noise: torch.Tensor,
                     mask: torch.Tensor, prefix: CommittedPrefix | None = None) -> torch.Tensor:
    """The one-step jump F(x1, t=1, s=0) regressed on the stop-gradient shortcut target."""
    ones = torch.ones(noise.shape[0], dtype=noise.dtype, device=noise.device)
    one, x1 = ones, noise
    if prefix is not None:
        one, x1, mask = prefix.times(ones), prefix.apply(noise), prefix.loss_mask(mask)
    target = consistency_target(policy, cache, x1, prefix)
    return masked_mse(expert_pass(policy, x1, one, torch.zeros_like(one), cache), target, mask,
                      policy.action_dim)


@dataclass(frozen=True)
class LossTerms:
    total: torch.Tensor
    flow_matching: torch.Tensor
    consistency: torch.Tensor


def snapflow_loss(policy: FlowPolicy, cache: PrefixCache, actions: torch.Tensor, mask: torch.Tensor,
                  alpha: float, consistency_weight: float, generator: torch.Generator,
                  max_delay: int = 0) -> LossTerms:
    """Routes round(alpha*B) random samples to flow matching and the rest to consistency.

    The prefix cache is computed once by the caller and shared by every expert pass. max_delay
    > 0: each sample gets a committed prefix of d ~ U{0..max_delay} actions (max_delay 0 draws
    nothing, so the random stream and the loss are exactly the plain ones).
    """
    batch = actions.shape[0]
    device = actions.device
    order = torch.randperm(batch, generator=generator).to(device)
    n_fm = int(round(alpha * batch))
    fm_index, sd_index = order[:n_fm], order[n_fm:]
    prefix = CommittedPrefix.sample(actions, max_delay, generator) if max_delay > 0 else None
    zero = actions.new_zeros(())
    fm = sd = zero
    if n_fm:
        noise = torch.randn(actions[fm_index].shape, generator=generator).to(device)
        t = sample_flow_time(n_fm, generator).to(device)
        fm = flow_matching_loss(policy, cache.select(fm_index), actions[fm_index], mask[fm_index], noise, t,
                                None if prefix is None else prefix.select(fm_index))
    if n_fm < batch:
        noise = torch.randn(actions[sd_index].shape, generator=generator).to(device)
        sd = consistency_loss(policy, cache.select(sd_index), noise, mask[sd_index],
                              None if prefix is None else prefix.select(sd_index))
    # Fixed-size split: alpha*mean_FM + (1-alpha)*mean_SD is the per-sample routing expectation.
    share = n_fm / batch
    total = share * fm + (1.0 - share) * consistency_weight * sd
    return LossTerms(total, fm.detach(), sd.detach())
