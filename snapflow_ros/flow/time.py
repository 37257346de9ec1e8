"""Time: the sampler of training times and the sinusoidal embedding of a time value."""

from __future__ import annotations

import math

import torch

from snapflow_ros.errors import ConfigError


def sample_flow_time(batch_size: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """t ~ Beta(1.5, 1.0) * 0.999 + 0.001 (pi0's sampler: more weight near the noise end).

    Drawn by inverse CDF (F(u) = u**1.5) so a torch.Generator makes it reproducible.
    """
    u = torch.rand(batch_size, generator=generator, device=device)
    return u.pow(1.0 / 1.5) * 0.999 + 0.001


def sinusoidal_time_embedding(time: torch.Tensor, dim: int, min_period: float = 4e-3,
                              max_period: float = 4.0) -> torch.Tensor:
    """(...) times -> (..., dim) [sin | cos] features: (B,) per sample or (B, H) per action;
    LeRobot's create_sinusoidal_pos_embedding."""
    if dim % 2:
        raise ConfigError(f"sinusoidal embedding dim must be even, got {dim}")
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64, device=time.device)
    period = min_period * (max_period / min_period) ** fraction
    scaling = (1.0 / period) * 2 * math.pi
    sin_input = scaling * time.to(torch.float64)[..., None]
    return torch.cat([torch.sin(sin_input), torch.cos(sin_input)], dim=-1).to(time.dtype)
