"""Euler sampling written once, on top of the FlowPolicy contract (N=10 teacher, N=1 student)."""

from __future__ import annotations

import torch

from snapflow_ros.policy.contract import FlowPolicy, PrefixCache


def euler_sample(policy: FlowPolicy, cache: PrefixCache, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """Integrate from t = 1 (noise) to t = 0 with `steps` Euler steps; returns normalised actions.

    Each step asks for the average velocity to the next time (s = t + dt, SnapFlow); for a
    policy whose target-time MLP is still zero this is the teacher's instantaneous velocity.
    With steps = 1: a = eps - F(eps, t=1, s=0).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    batch = noise.shape[0]
    dt = -1.0 / steps
    x = noise
    for k in range(steps):
        t = 1.0 + k * dt
        s = max(t + dt, 0.0)
        t_vec = torch.full((batch,), t, dtype=noise.dtype, device=noise.device)
        s_vec = torch.full((batch,), s, dtype=noise.dtype, device=noise.device)
        x = x + dt * policy.velocity(x, t_vec, s_vec, cache)
    return x
