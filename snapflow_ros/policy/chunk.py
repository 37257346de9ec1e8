"""An action chunk: what a policy returns for one observation, before it becomes a message."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from snapflow_ros.errors import InputError


@dataclass(frozen=True)
class ActionChunk:
    """horizon x action_dim actions; action k is due at start_ns + k * dt_s."""

    actions: np.ndarray
    joint_names: tuple[str, ...]
    dt_s: float
    policy_id: str
    denoising_steps: int
    observation_stamp_ns: int
    start_ns: int
    inference_latency_s: float
    sequence: int = 0

    def __post_init__(self) -> None:
        if self.actions.ndim != 2 or self.actions.shape[1] != len(self.joint_names):
            raise InputError(
                f"chunk actions must be (horizon, {len(self.joint_names)}) to match joint_names, "
                f"got {self.actions.shape}"
            )
        if not np.all(np.isfinite(self.actions)):
            raise InputError("chunk actions contain NaN or infinite values")
        if self.dt_s <= 0:
            raise InputError(f"chunk dt_s must be positive, got {self.dt_s}")

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[0])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])
