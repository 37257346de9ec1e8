"""Euler sampling written once: the loop over any velocity function (a policy's expert, an
ONNX expert graph), with or without a committed prefix, a policy's whole path prepare -> prefix
-> Euler -> unnormalise, and how many steps a policy runs by default (N=10 teacher, N=1 student)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from snapflow_ros.errors import ConfigError
from snapflow_ros.flow.prefix import CommittedPrefix
from snapflow_ros.policy.contract import FlowPolicy, PrefixCache, RawBatch

# (x, t, s) -> the average velocity from time t to time s at x; t and s are (B,) for the whole
# chunk or (B, H) per action (0 on a committed prefix), in x's dtype and device.
Velocity = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def default_steps(policy: FlowPolicy) -> int:
    """Denoising steps when none are asked for: 1 for a SnapFlow student (its target-time MLP
    is trained), 10 for a teacher (pi0's own default)."""
    return 1 if policy.target_time.is_trained() else 10


def euler_integrate(velocity: Velocity, noise: torch.Tensor, steps: int,
                    prefix: CommittedPrefix | None = None) -> torch.Tensor:
    """Integrate from t = 1 (noise) to t = 0 with `steps` Euler steps; returns normalised actions.

    Each step asks for the average velocity to the next time (s = t + dt, SnapFlow); for a
    policy whose target-time MLP is still zero this is the teacher's instantaneous velocity.
    With steps = 1: a = eps - F(eps, t=1, s=0). With a committed prefix, every pass sees it
    clean at t = s = 0 and the result starts with it exactly (a policy trained with
    --max-delay continues it).
    """
    times, dt, x = euler_steps(noise, steps), -1.0 / steps, noise
    for _, t_vec, s_vec in times:
        if prefix is not None:
            x, t_vec, s_vec = prefix.apply(x), prefix.times(t_vec), prefix.times(s_vec)
        x = x + dt * velocity(x, t_vec, s_vec)
    return x if prefix is None else prefix.apply(x)


def euler_steps(noise: torch.Tensor, steps: int) -> list[tuple[float, torch.Tensor, torch.Tensor]]:
    """(t, t, s) of each of `steps` Euler steps (dt = -1/steps, s = t + dt): t as a float and
    both as (B,) tensors in the noise's dtype and device, whatever x was promoted to by a step."""
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    batch, dtype, device = noise.shape[0], noise.dtype, noise.device
    dt = -1.0 / steps
    times = [1.0 + k * dt for k in range(steps)]
    return [(t, torch.full((batch,), t, dtype=dtype, device=device),
             torch.full((batch,), max(t + dt, 0.0), dtype=dtype, device=device)) for t in times]


def euler_sample(policy: FlowPolicy, cache: PrefixCache, noise: torch.Tensor, steps: int,
                 prefix: CommittedPrefix | None = None) -> torch.Tensor:
    """euler_integrate over the policy's expert attending to `cache` (traceable: ONNX export)."""
    return euler_integrate(lambda x, t, s: policy.velocity(x, t, s, cache), noise, steps, prefix)


@torch.no_grad()
def sample_actions(policy: FlowPolicy, batch: RawBatch, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, chunk, action_dim) actions in robot units, on the policy's device: prepare -> prefix
    once -> `steps` expert passes from `noise` -> unnormalise."""
    cache = policy.embed_prefix(policy.prepare(batch))
    return policy.unnormalize_actions(euler_sample(policy, cache, noise.to(policy.device), steps))
