"""`snapflow sim-table`: the paper's comparison in small, over several independent seeds.

For each seed: record the expert's demonstrations of every task (through ROS, stepped on a
simulated clock, so a seed's bags are the same on any machine), train a teacher on them,
SnapFlow-distil a student from it, and run teacher@10, teacher@2, naive teacher@1 and student@1
for the same episodes (layouts and noise) of every task. Then, per task: success per seed, the
mean over seeds with its 95% t interval, the pooled Wilson interval, and paired comparisons of
student@1 against naive@1 and teacher@10 on the shared episodes (snapflow_ros.sim.statistics).

Every stage is cached under WORKDIR/seed-N (keyed by the settings that made it), so a cut-off run
resumes where it stopped, and a seed's evaluation is written as soon as it is done.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from snapflow_ros.ros.sim_demo import REPLAN_EVERY, is_cached, python_module, record_key, stamp_cache, record, train_teacher
from snapflow_ros.sim.demo_config import SimDemoConfig, SimTableConfig
from snapflow_ros.sim.tasks import get_task, sim_bag_config

POLICIES = (("teacher@10", "teacher", 10), ("teacher@2", "teacher", 2), ("teacher@1", "teacher", 1),
            ("student@1", "student", 1))


_STARTED = time.monotonic()


def log(message: str) -> None:
    elapsed = int(time.monotonic() - _STARTED)
    print(f"sim-table [{elapsed // 60:02d}:{elapsed % 60:02d}]: {message}", file=sys.stderr, flush=True)


def distill_student(config: SimDemoConfig, bags: list[Path], bag_config: Path, teacher: Path) -> Path:
    """snapflow distill on the seed's bags (the node's service runs the same job: sim-demo shows it)."""
    key = record_key(config) | {"teacher_steps": config.teacher_steps, "student_steps": config.student_steps,
                                 "batch_size": config.batch_size}
    run = config.workdir / "student"
    if is_cached(run, key) and (run / "policy" / "config.json").is_file():
        log(f"seed {config.seed}: student cached in {run / 'policy'}")
        return run / "policy"
    log(f"seed {config.seed}: SnapFlow for {config.student_steps} steps")
    subprocess.run(python_module("snapflow_ros.cli.main", "distill", str(teacher), "--bags", *map(str, bags),
                           "--bag-config", str(bag_config), "--output", str(run), "--steps", str(config.student_steps),
                           "--batch-size", str(config.batch_size), "--holdout-episodes", "0",
                           "--checkpoint-every", "0", "--log-every", str(max(config.student_steps // 10, 1)),
                           "--seed", str(config.seed)), check=True, stdout=subprocess.DEVNULL)
    stamp_cache(run, key)
    return run / "policy"


def evaluate_seed(config: SimDemoConfig, checkpoints: dict[str, Path], episodes: int) -> dict:
    """Every policy on the same episodes of every task; cached in seed-N/evaluation.json."""
    from snapflow_ros.sim.evaluation import Candidate, evaluate_task

    path = config.workdir / "evaluation.json"
    key = {"checkpoints": {k: str(v) for k, v in checkpoints.items()}, "episodes": episodes,
           "tasks": list(config.tasks), "replan_every": REPLAN_EVERY, "image_size": config.image_size}
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            log(f"seed {config.seed}: evaluation cached in {path}")
            return cached["tasks"]
    candidates = [Candidate(name, checkpoints[role], steps) for name, role, steps in POLICIES]
    done = f"/{episodes}"
    per_task = {}
    for i, task in enumerate(config.tasks):
        # Layouts and noise: the seed's own, shared by every policy of the seed.
        per_task[task] = evaluate_task(
            get_task(task, config.task_file), candidates, episodes, seed=10_000 * (config.seed + 1) + 1000 * i,
            image_size=config.image_size, replan_every=REPLAN_EVERY,
            progress=lambda line: log(f"seed {config.seed}: {line}") if line.endswith(done) else None)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"key": key, "tasks": per_task}, indent=1) + "\n")
    temporary.replace(path)
    return per_task


def run_seed(config: SimDemoConfig, episodes: int) -> dict:
    config.workdir.mkdir(parents=True, exist_ok=True)
    say = lambda message: log(f"seed {config.seed}: {message}")  # noqa: E731
    bags = record(config, say)
    bag_config = config.workdir / "bag_dataset.yaml"
    sim_bag_config(config.rate_hz).write_yaml(bag_config)
    teacher = train_teacher(config, bags, bag_config, say)
    student = distill_student(config, bags, bag_config, teacher)
    return evaluate_seed(config, {"teacher": teacher, "student": student}, episodes)


def run_sim_table(config: SimTableConfig) -> dict:
    from snapflow_ros.sim.statistics import markdown_table, sim_table_report, write_seed_plot

    started = time.perf_counter()
    for task in config.tasks:
        get_task(task, config.task_file)  # an unknown task fails now, not after an hour
    seeds = {seed: run_seed(config.seed_config(seed), config.eval_episodes) for seed in config.seeds}
    outcomes = {task: {name: [seeds[seed][task][name]["episode_successes"] for seed in config.seeds]
                       for name, _, _ in POLICIES} for task in config.tasks}
    report = sim_table_report(outcomes, resamples=config.resamples)
    report["latency_ms_p50"] = {task: {name: [seeds[s][task][name]["latency_ms"]["p50"] for s in config.seeds]
                                       for name, _, _ in POLICIES} for task in config.tasks}
    report["multimodal"] = {task: get_task(task, config.task_file).multimodal for task in config.tasks}
    report["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}
    report["wall_seconds"] = time.perf_counter() - started
    table = markdown_table(report)
    config.workdir.mkdir(parents=True, exist_ok=True)
    (config.workdir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (config.workdir / "table.md").write_text(table + "\n")
    write_seed_plot(report, config.workdir / "success_by_seed.svg")
    print(table)
    log(f"report: {config.workdir / 'report.json'}, table: {config.workdir / 'table.md'}, plot: "
        f"{config.workdir / 'success_by_seed.svg'} ({report['wall_seconds']:.0f} s)")
    return report

