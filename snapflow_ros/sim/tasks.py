"""What a simulated task is (SimTask: a Meta-World environment, an instruction, goals, a step
budget and an expert) and where tasks come from: the built-in ones (builtin_tasks.py) and any
user file named with --task-file that defines a module-level `TASKS` list, written the same way.

A task file is ordinary Python:

    from snapflow_ros.sim.experts import MetaWorldExpert
    from snapflow_ros.sim.tasks import SimTask

    TASKS = [SimTask("push", "push-v3", "push the puck to the goal", max_steps=150,
                     expert=MetaWorldExpert)]
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from snapflow_ros.errors import ConfigError

if TYPE_CHECKING:
    from snapflow_ros.sim.robot import MetaWorldRobot

# Bump when tasks, the robot or the experts change what gets recorded: sim-demo's cached bags and
# teacher are keyed by it.
SIM_REVISION = 6

SUCCESS_RADIUS = 0.05  # metres from a goal to the fingertips: Meta-World's reach threshold


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
    expert: Callable[[MetaWorldRobot, int], TaskExpert]  # (robot, seed) -> expert
    multimodal: bool = False       # its expert picks one of several modes at random each episode
    planar: bool = False           # goals at the fingertips' start height (a top-view camera shows x, y only)
    goals: tuple[tuple[float, float], ...] = ()  # fixed (x, y) of planar goals, success at any; () Meta-World's
    goals_from_start: bool = False  # goals are (dx, dy) from where the fingertips start (exact mirror images)
    pillar_radius: float = 0.0     # > 0: an invisible pillar halfway from the start to the goal (metres)
    detour: float = 0.0            # sideways offset of a detour expert's via point (metres)
    failure: Callable[[MetaWorldRobot], str] | None = None  # extra failure check: a reason, or ""

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ConfigError(f"task {self.name!r}: max_steps must be >= 1, got {self.max_steps}")
        if self.goals and not self.planar:
            raise ConfigError(f"task {self.name!r}: fixed goals are planar; set planar=True")
        if not callable(self.expert):
            raise ConfigError(f"task {self.name!r}: expert must be a callable (robot, seed) -> expert")


def _tasks_of_file(path: Path) -> list[SimTask]:
    if not path.is_file():
        raise ConfigError(f"--task-file {path}: no such file")
    module_name = f"snapflow_user_tasks_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"--task-file {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses defined in the file look their module up here
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # the user's code: report where, keep the cause
        del sys.modules[module_name]
        raise ConfigError(f"--task-file {path}: {type(error).__name__}: {error}") from error
    tasks = getattr(module, "TASKS", None)
    if not isinstance(tasks, (list, tuple)) or not all(isinstance(t, SimTask) for t in tasks) or not tasks:
        raise ConfigError(f"--task-file {path}: must define TASKS, a non-empty list of SimTask")
    return list(tasks)


def load_tasks(task_file: Path | None = None) -> dict[str, SimTask]:
    """The built-in tasks, plus those of `task_file`; a name may not be defined twice."""
    from snapflow_ros.sim.builtin_tasks import TASKS as BUILTIN

    tasks: dict[str, SimTask] = {}
    for task in [*BUILTIN, *(_tasks_of_file(Path(task_file)) if task_file else [])]:
        if task.name in tasks:
            raise ConfigError(f"task {task.name!r} is defined twice"
                              + (f" (built-in, and in {task_file})" if task_file else ""))
        tasks[task.name] = task
    return tasks


def get_task(name: str, task_file: Path | None = None) -> SimTask:
    tasks = load_tasks(task_file)
    if name not in tasks:
        raise ConfigError(f"unknown sim task '{name}'; known: {sorted(tasks)}"
                          + ("" if task_file else " (a task of your own: --task-file FILE)"))
    return tasks[name]


def sim_bag_config(rate_hz: float):
    """How bags recorded from sim_robot's topics are read (its expert's commands as actions)."""
    from snapflow_ros.bags.config import BagDatasetConfig
    from snapflow_ros.sim.robot import STATE_NAMES

    return BagDatasetConfig(cameras={"top": "/camera/top/image_raw"}, joint_names=STATE_NAMES,
                            instruction_topic="/instruction", action_topic="/joint_commands", rate_hz=rate_hz,
                            max_staleness=1.5 / rate_hz, episode_split="topic", episode_topic="/episode_start")
