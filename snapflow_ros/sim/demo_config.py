"""What the main job (snapflow sim-demo) and sim-table run: sizes of each stage, small enough for a
laptop CPU."""

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


@dataclass(frozen=True)
class SimTableConfig:
    workdir: Path = Path("runs/sim-table")
    tasks: tuple[str, ...] = ("reach", "button-press", "reach-detour", "reach-either")
    seeds: tuple[int, ...] = (0, 1, 2)
    demo_episodes: int = 40
    teacher_steps: int = 3000
    student_steps: int = 1500
    student_lr: float = 1e-3       # snapflow distill's default
    consistency_weight: float = 0.1  # lambda (the paper's)
    batch_size: int = 64
    eval_episodes: int = 100       # per policy, task and seed
    image_size: int = 32
    rate_hz: float = 20.0
    task_file: Path | None = None
    resamples: int = 10_000        # paired bootstrap
    report_dir: Path | None = None  # report, table and plot; None: workdir

    @property
    def student_name(self) -> str:
        """The student's directory in each seed: one per distillation setting, so students of
        other settings (a study of what the student needs) sit beside it and share everything else."""
        return f"student-{self.student_steps}steps-lr{self.student_lr:g}-lambda{self.consistency_weight:g}"

    def seed_config(self, seed: int) -> SimDemoConfig:
        """What one seed records and trains: sim-demo's stages with this seed."""
        return SimDemoConfig(workdir=self.workdir / f"seed-{seed}", tasks=self.tasks,
                             demo_episodes=self.demo_episodes, teacher_steps=self.teacher_steps,
                             student_steps=self.student_steps, batch_size=self.batch_size,
                             eval_episodes=self.eval_episodes, image_size=self.image_size,
                             rate_hz=self.rate_hz, seed=seed, task_file=self.task_file)
