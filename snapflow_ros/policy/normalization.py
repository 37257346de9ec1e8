"""Mean/std normalisation of states and actions, stored beside the weights."""

from __future__ import annotations

import torch
from torch import nn

from snapflow_ros.errors import ConfigError


class Normalizer(nn.Module):
    """(x - mean) / std per feature; std is floored so constant features stay finite."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, samples: torch.Tensor) -> None:
        """Statistics of (N, ..., dim) samples over every axis but the last."""
        flat = samples.reshape(-1, samples.shape[-1]).to(torch.float64)
        if flat.shape[-1] != self.mean.shape[0]:
            raise ConfigError(f"normaliser of dim {self.mean.shape[0]} fitted on dim {flat.shape[-1]}")
        self.mean.copy_(flat.mean(0))
        self.std.copy_(flat.std(0, unbiased=False).clamp_min(self.eps))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean
