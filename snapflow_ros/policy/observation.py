"""One aligned observation, as the policy sees it (already converted from ROS messages)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from snapflow_ros.errors import InputError


@dataclass(frozen=True)
class Observation:
    """Inputs of one inference call.

    state: proprioceptive vector in the policy's joint order, shape (state_dim,).
    images: camera name -> HxWx3 uint8 RGB array.
    instruction: the task in natural language.
    stamp_ns: stamp of the oldest input used, nanoseconds (ROS time).
    """

    state: np.ndarray
    stamp_ns: int
    images: dict[str, np.ndarray] = field(default_factory=dict)
    instruction: str = ""

    def __post_init__(self) -> None:
        if self.state.ndim != 1:
            raise InputError(f"observation state must be a vector, got shape {self.state.shape}")
        if not np.all(np.isfinite(self.state)):
            raise InputError("observation state contains NaN or infinite values")
