"""Where simulated tasks come from: the built-in ones (builtin_tasks.py) and any user file named
with --task-file that defines a module-level `TASKS` list, written the same way. What a task is
(SimTask) is snapflow_ros.sim.task; task files may import it from here too.

A task file is ordinary Python:

    from snapflow_ros.sim.experts import MetaWorldExpert
    from snapflow_ros.sim.tasks import SimTask

    TASKS = [SimTask("push", "push-v3", "push the puck to the goal", max_steps=150,
                     expert=MetaWorldExpert)]
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from snapflow_ros.errors import ConfigError
from snapflow_ros.sim.builtin_tasks import TASKS as BUILTIN
from snapflow_ros.sim.task import SimTask, TaskExpert

# SimTask and TaskExpert are re-exported: task files (README, test_task_file.py) import them from here.
__all__ = ["SIM_REVISION", "SimTask", "TaskExpert", "get_task", "load_tasks"]

# Bump when tasks, the robot or the experts change what gets recorded: sim-demo's cached bags and
# teacher are keyed by it.
SIM_REVISION = 6


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
