"""HoldPositionPolicy: the trivial policy that commands the current joint positions.

It is the node's built-in default until a flow policy checkpoint is configured, and the
safe fallback a robot integrator can bring up first: it exercises every topic, message and
controller without moving the robot.
"""

from __future__ import annotations

import numpy as np

from snapflow_ros.errors import ConfigError, InputError
from snapflow_ros.policy.observation import Observation


class HoldPositionPolicy:
    """Returns `horizon` copies of the observed joint positions."""

    policy_id = "builtin:hold-position"
    steps = 0          # no denoising
    max_delay = 0      # takes no committed prefix (real-time chunking): it holds anyway
    cameras: tuple[str, ...] = ()

    def __init__(self, action_dim: int, horizon: int) -> None:
        if action_dim < 1:
            raise ConfigError(f"action_dim must be >= 1, got {action_dim}")
        if horizon < 1:
            raise ConfigError(f"horizon must be >= 1, got {horizon}")
        self.action_dim = action_dim
        self.horizon = horizon

    def predict(self, observation: Observation, seed: int = 0, continuation: object = None) -> np.ndarray:
        """(horizon, action_dim) float32 actions (seed and continuation: ServedPolicy's signature)."""
        if observation.state.shape != (self.action_dim,):
            raise InputError(
                f"state has shape {observation.state.shape}, policy expects ({self.action_dim},)"
            )
        return np.tile(observation.state.astype(np.float32), (self.horizon, 1))
