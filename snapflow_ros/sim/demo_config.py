"""What the main job (snapflow sim-demo) runs: sizes of each stage, small enough for a laptop CPU."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SimDemoConfig:
    workdir: Path = Path("runs/sim-demo")
    tasks: tuple[str, ...] = ("reach", "reach-detour", "button-press")
    demo_episodes: int = 40        # recorded expert episodes per task
    teacher_steps: int = 3000
    student_steps: int = 1500
    batch_size: int = 64
    eval_episodes: int = 30        # sim-eval episodes per task and policy
    ros_episodes: int = 2          # closed-loop episodes per task through ROS after the swap
    image_size: int = 32
    rate_hz: float = 20.0
    seed: int = 0
    task_file: Path | None = None  # user tasks (snapflow_ros.sim.tasks); None: built-ins only
