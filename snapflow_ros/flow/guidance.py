"""Inference-time real-time chunking (RTC, Black et al. 2025, arXiv 2506.07339): a teacher that
was not trained with a committed prefix can still continue the previous chunk. Every Euler step
is steered, by pseudo-inverse guidance, so that its clean-action estimate matches the previous
chunk's remaining actions under a soft prefix mask. Same math as LeRobot 0.6.1's RTCProcessor
(policies/rtc/modeling_rtc.py), in our time convention (t = 1 noise, t = 0 data); pure torch."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from snapflow_ros.errors import ConfigError
from snapflow_ros.flow.sampling import Velocity, euler_steps

SCHEDULES = ("exp", "linear", "ones", "zeros")


@dataclass(frozen=True)
class RtcGuidance:
    """Guided inpainting of the previous chunk's remaining actions."""

    delay: int                   # d: actions committed during inference (weight 1)
    execution_horizon: int       # the prefix weight reaches over this many actions; 0 beyond
    max_guidance_weight: float = 10.0  # beta: the clamp of the guidance weight
    schedule: str = "exp"        # LeRobot's prefix_attention_schedule, lower case

    def __post_init__(self) -> None:
        for name, low in (("delay", 0), ("execution_horizon", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"RtcGuidance.{name} must be an integer >= {low}, got {value!r}")
        beta = self.max_guidance_weight
        if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 < beta < math.inf:
            raise ConfigError(f"RtcGuidance.max_guidance_weight must be a finite number > 0, got {beta!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"RtcGuidance.schedule must be one of {SCHEDULES}, got {self.schedule!r}")

    def weights(self, horizon: int, available: int) -> torch.Tensor:
        """(horizon,) prefix weights W, as LeRobot's get_prefix_weights with the horizon clamped to
        the `available` previous actions: 1 on the first d (d clamped to the horizon), then the
        schedule's ramp, 0 from the horizon on. "zeros" is LeRobot's: 1 on the first d only."""
        end = max(min(self.execution_horizon, available, horizon), 0)
        start = min(self.delay, end)
        i = torch.arange(horizon, dtype=torch.float32)
        if self.schedule in ("linear", "exp"):
            w = ((end - i) / (end - start + 1)).clamp(0.0, 1.0)
            if self.schedule == "exp":
                w = w * torch.expm1(w) / (math.e - 1)
        else:
            w = torch.full((horizon,), 1.0 if self.schedule == "ones" else 0.0)
        return torch.where(i < start, 1.0, torch.where(i < end, w, 0.0))

    def guidance_weight(self, t: float) -> float:
        """min(beta, (1 - tau) / (tau r^2)) with tau = 1 - t and r^2 = (1 - tau)^2 / (tau^2 + (1 - tau)^2);
        beta at t = 1 (tau = 0, where LeRobot's nan_to_num gives beta), 0 at t = 0."""
        if t >= 1.0:
            return float(self.max_guidance_weight)
        if t <= 0.0:
            return 0.0
        return min(float(self.max_guidance_weight), (t * t + (1.0 - t) ** 2) / (t * (1.0 - t)))


def guided_euler_integrate(velocity: Velocity, noise: torch.Tensor, steps: int, previous: torch.Tensor,
                           guidance: RtcGuidance) -> torch.Tensor:
    """euler_integrate's loop (t = 1 -> 0, s the next time) with RTC guidance toward `previous`,
    (B, n <= H, D) normalised: per step x0 = x - t v, e = (previous - x0) W, g = e^T dx0/dx and
    v <- v - w(t) g. Runs under an outer no_grad (not inference_mode): only x gets a gradient."""
    batch, horizon, dim = noise.shape
    if previous.ndim != 3 or previous.shape[0] != batch or previous.shape[2] != dim or previous.shape[1] > horizon:
        raise ConfigError(f"previous must be (B={batch}, n<={horizon}, D={dim}) like noise, "
                          f"got {tuple(previous.shape)}")
    n, dtype, device = previous.shape[1], noise.dtype, noise.device
    w = guidance.weights(horizon, n)[:n].to(dtype=dtype, device=device)[None, :, None]
    target = previous.to(dtype=dtype, device=device)
    guide = bool((w != 0).any())
    times, dt, x = euler_steps(noise, steps), -1.0 / steps, noise
    for t, t_vec, s_vec in times:
        if not guide:  # nothing to inpaint: the plain Euler step
            x = x + dt * velocity(x, t_vec, s_vec)
            continue
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            v = velocity(x_in, t_vec, s_vec)
            x0 = (x_in - t * v)[:, :n]
            err = ((target - x0) * w).detach()
            (correction,) = torch.autograd.grad(x0, inputs=x_in, grad_outputs=err)
        x = (x + dt * (v.detach() - guidance.guidance_weight(t) * correction)).detach()
    return x
