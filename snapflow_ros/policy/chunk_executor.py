"""ChunkExecutor: when the next chunk is due, what of a new chunk is still ahead, and which action
is in force at any moment.

The policy node and the simulated rollout both run it, so `sim-eval` measures the controller the
robot runs. It has no clock of its own: every call is told the time, so its rules are tested
without ROS and run the same on wall time, sim time and a stepped simulation.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from snapflow_ros.errors import ConfigError
from snapflow_ros.policy.chunk_timing import blend_overlap, drop_stale


class Trigger(enum.Enum):
    """What woke the caller."""

    PERIOD = "period"               # the chunk timer (chunk_rate_hz)
    INPUTS_COMPLETE = "inputs"      # the camera frames and joint state of one moment are all in


@dataclass(frozen=True)
class ExecutorConfig:
    """The node's chunk parameters (action_dt, watermark, drop_stale_actions, blend_decay)."""

    action_dt_s: float
    watermark: float = 0.0          # 0: a chunk per period; else when this share of the one in force ran
    drop_stale_actions: bool = True
    blend_decay: float = 0.0        # 0: no blending

    def __post_init__(self) -> None:
        if not self.action_dt_s > 0:
            raise ConfigError(f"action_dt must be positive, got {self.action_dt_s}")
        if not 0.0 <= self.watermark <= 1.0:
            raise ConfigError(f"watermark must be in [0, 1], got {self.watermark}")
        if self.blend_decay < 0:
            raise ConfigError(f"blend_decay must be >= 0, got {self.blend_decay}")

    @property
    def action_dt_ns(self) -> int:
        return round(self.action_dt_s * 1e9)


@dataclass(frozen=True)
class ScheduledChunk:
    """The actions of an accepted chunk still ahead: action k is in force from start_ns + k * dt."""

    actions: np.ndarray
    start_ns: int
    observation_ns: int
    arrival_ns: int
    policy_id: str
    stale_actions: int              # dropped because inference latency had already passed them

    @property
    def horizon(self) -> int:
        return len(self.actions)


class ChunkExecutor:
    def __init__(self, config: ExecutorConfig) -> None:
        self.config = config
        self._current: ScheduledChunk | None = None

    @property
    def current(self) -> ScheduledChunk | None:
        return self._current

    def reset(self) -> None:
        """Forget the chunk in force (a new episode, a deactivated node)."""
        self._current = None

    def executed_share(self, now_ns: int) -> float:
        """Share of the chunk in force whose time has passed (1.0 when none is)."""
        chunk = self._current
        if chunk is None:
            return 1.0
        return (now_ns - chunk.start_ns) / (chunk.horizon * self.config.action_dt_ns)

    def due(self, now_ns: int, trigger: Trigger) -> bool:
        """Whether to compute a chunk now. Without a watermark, on the period; with one, as soon as
        that share of the chunk in force has executed, on whichever trigger comes first."""
        if self.config.watermark == 0:
            return trigger is Trigger.PERIOD
        return self._current is None or self.executed_share(now_ns) >= self.config.watermark

    def accept(self, actions: np.ndarray, observation_ns: int, now_ns: int, policy_id: str) -> ScheduledChunk:
        """A chunk computed from the observation stamped observation_ns, ready at now_ns: the
        actions inference latency already passed are dropped (if configured), the overlap with
        the chunk in force is blended (same policy only), and it becomes the chunk in force."""
        c = self.config
        start_ns, stale = observation_ns, 0
        if c.drop_stale_actions:
            kept, start_ns = drop_stale(actions, observation_ns, c.action_dt_s, now_ns)
            stale, actions = len(actions) - len(kept), kept
        previous = self._current
        if c.blend_decay > 0 and previous is not None and previous.policy_id == policy_id:
            actions = blend_overlap(previous.actions, previous.start_ns, actions, start_ns, c.action_dt_s,
                                    c.blend_decay)
        self._current = ScheduledChunk(actions=actions, start_ns=start_ns, observation_ns=observation_ns,
                                       arrival_ns=now_ns, policy_id=policy_id, stale_actions=stale)
        return self._current

    def action_at(self, now_ns: int) -> np.ndarray | None:
        """The action in force at now_ns: what a joint_trajectory_controller executing the
        published chunk commands then (the last point once the chunk has run out); None before
        the first chunk."""
        chunk = self._current
        if chunk is None:
            return None
        k = math.floor((now_ns - chunk.start_ns) / self.config.action_dt_ns + 1e-9)
        return chunk.actions[min(max(k, 0), chunk.horizon - 1)]
