"""What a simulated task is: SimTask (a Meta-World environment, an instruction, goals, a step
budget and an expert), the TaskExpert it builds, and TaskRobot, the robot as an expert or a
failure check sees it. The robot and the experts import this module and it imports neither of
them (TaskRobot is a protocol), so the task description sits below both."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from snapflow_ros.errors import ConfigError

SUCCESS_RADIUS = 0.05  # metres from a goal to the fingertips: Meta-World's reach threshold


class TaskRobot(Protocol):
    """What experts and failure checks may read of the robot (MetaWorldRobot implements it)."""

    task: SimTask
    full_obs: np.ndarray    # Meta-World's (39,) observation; [:3] the hand
    start: np.ndarray       # (3,) where the hand started this episode

    @property
    def goals(self) -> np.ndarray: ...       # (k, 3) goals of the fingertips

    @property
    def hand_goals(self) -> np.ndarray: ...  # (k, 3) where the hand is when the fingertips are on each goal

    @property
    def pillar(self) -> np.ndarray: ...      # (2,) a detour task's invisible pillar


class TaskExpert(Protocol):
    """A scripted demonstrator. reset() at each episode start (a multi-modal expert picks its
    mode there); target() is the command for the robot's current state (STATE_NAMES order)."""

    mode: int  # this episode's mode (route or goal index); 0 for a unimodal expert

    def reset(self) -> None: ...

    def target(self) -> np.ndarray: ...


@dataclass(frozen=True)
class SimTask:
    name: str
    env_name: str                  # Meta-World v3 environment
    instruction: str
    max_steps: int                 # environment steps before the episode counts as failed
    expert: Callable[[TaskRobot, int], TaskExpert]  # (robot, seed) -> expert
    multimodal: bool = False       # its expert picks one of several modes at random each episode
    planar: bool = False           # goals at the fingertips' start height (a top-view camera shows x, y only)
    goals: tuple[tuple[float, float], ...] = ()  # fixed (x, y) of planar goals, success at any; () Meta-World's
    goals_from_start: bool = False  # goals are (dx, dy) from where the fingertips start (exact mirror images)
    pillar_radius: float = 0.0     # > 0: an invisible pillar halfway from the start to the goal (metres)
    detour: float = 0.0            # sideways offset of a detour expert's via point (metres)
    failure: Callable[[TaskRobot], str] | None = None  # extra failure check: a reason, or ""

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ConfigError(f"task {self.name!r}: max_steps must be >= 1, got {self.max_steps}")
        if self.goals and not self.planar:
            raise ConfigError(f"task {self.name!r}: fixed goals are planar; set planar=True")
        if not callable(self.expert):
            raise ConfigError(f"task {self.name!r}: expert must be a callable (robot, seed) -> expert")
