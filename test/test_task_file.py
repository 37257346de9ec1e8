"""A task defined in the user's own file (outside the package) goes through the same commands as
the built-in ones: sim-record (through ROS), train-teacher on the bag, sim-eval."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from snapflow_ros.errors import ConfigError
from snapflow_ros.sim.tasks import get_task, load_tasks

SNAPFLOW = [sys.executable, "-m", "snapflow_ros.cli.main"]

TASK_FILE = '''
"""Reach a point 12 cm ahead via a point 6 cm to the left: a custom route expert."""
from functools import partial

import numpy as np

from snapflow_ros.sim.experts import RouteExpert
from snapflow_ros.sim.tasks import SimTask


def via_left(robot):
    goal = robot.hand_goals[0]
    return [[np.array([goal[0] - 0.06, (robot.start[1] + goal[1]) / 2, robot.start[2]]), goal]]


TASKS = [SimTask("reach-via-left", "reach-v3", "reach the goal from the left", max_steps=40,
                 expert=partial(RouteExpert, routes=via_left), planar=True, goals=((0.0, 0.12),),
                 goals_from_start=True)]
'''


def test_a_broken_or_clashing_task_file_is_named(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("TASKS = [1/0]\n")
    with pytest.raises(ConfigError, match=r"broken\.py: ZeroDivisionError"):
        load_tasks(broken)
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="must define TASKS"):
        load_tasks(empty)
    clash = tmp_path / "clash.py"
    clash.write_text("from snapflow_ros.sim.builtin_tasks import TASKS\n")
    with pytest.raises(ConfigError, match="'reach' is defined twice"):
        load_tasks(clash)
    with pytest.raises(ConfigError, match="no such file"):
        load_tasks(tmp_path / "missing.py")
    with pytest.raises(ConfigError, match="--task-file FILE"):
        get_task("reach-via-left")


@pytest.mark.ros
@pytest.mark.slow
def test_a_task_of_a_user_file_records_trains_and_evaluates(tmp_path):
    task_file = tmp_path / "elsewhere" / "my_tasks.py"
    task_file.parent.mkdir()
    task_file.write_text(textwrap.dedent(TASK_FILE))
    assert set(load_tasks(task_file)) == set(load_tasks()) | {"reach-via-left"}

    def snapflow(*args: str) -> str:
        result = subprocess.run([*SNAPFLOW, *args], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    bag = tmp_path / "bag"
    recorded = json.loads(snapflow("sim-record", "--task-file", str(task_file), "--task", "reach-via-left",
                                   "--episodes", "2", "--output", str(bag), "--rate-hz", "50"))
    assert recorded["successes"] == 2
    from snapflow_ros.sim.topics import sim_bag_config

    config = tmp_path / "bag_dataset.yaml"
    sim_bag_config(50.0).write_yaml(config)
    snapflow("train-teacher", "--bags", str(bag), "--bag-config", str(config), "--output", str(tmp_path / "teacher"),
             "--steps", "5", "--batch-size", "8", "--holdout-episodes", "0", "--checkpoint-every", "0")
    report_path = tmp_path / "eval.json"
    snapflow("sim-eval", "--task-file", str(task_file), "--tasks", "reach-via-left", "--teacher",
             str(tmp_path / "teacher" / "policy"), "--episodes", "2", "--json", str(report_path),
             "--plot", str(tmp_path / "plot.svg"))
    report = json.loads(report_path.read_text())
    rows = report["tasks"]["reach-via-left"]
    assert set(rows) == {"teacher@10", "teacher@1"} and all(r["episodes"] == 2 for r in rows.values())
