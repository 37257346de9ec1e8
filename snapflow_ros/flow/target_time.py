"""phi(s): the target-time embedding SnapFlow adds to a flow policy (paper, section 3)."""

from __future__ import annotations

import torch
from torch import nn

from snapflow_ros.flow.time import sinusoidal_time_embedding


class TargetTimeMLP(nn.Module):
    """sinusoid(s) -> Linear -> SiLU -> Linear, added to sinusoid(t) before the policy's time MLP.

    Only the LAST Linear is zero-initialised: the policy is unchanged at step 0 (the student
    starts as the teacher), while the first layer still gets gradients once the last one moves
    (zeroing both would leave silu(0) * 0 = 0 and no gradient to either).
    """

    def __init__(self, width: int, min_period: float = 4e-3, max_period: float = 4.0) -> None:
        super().__init__()
        self.width = width
        self.min_period, self.max_period = min_period, max_period  # the policy's own sinusoid
        self.linear_in = nn.Linear(width, width)
        self.linear_out = nn.Linear(width, width)
        nn.init.zeros_(self.linear_out.weight)
        nn.init.zeros_(self.linear_out.bias)

    def forward(self, target_time: torch.Tensor) -> torch.Tensor:
        features = sinusoidal_time_embedding(target_time, self.width, self.min_period, self.max_period)
        features = features.to(self.linear_in.weight.dtype)
        return self.linear_out(nn.functional.silu(self.linear_in(features)))

    def is_trained(self) -> bool:
        """False while the zero-initialised last layer is still zero (a teacher, or step 0)."""
        return bool(torch.count_nonzero(self.linear_out.weight) or torch.count_nonzero(self.linear_out.bias))
