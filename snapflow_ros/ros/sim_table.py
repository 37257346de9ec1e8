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

from snapflow_ros.files import checkpoint_id
from snapflow_ros.ros.sim_demo import (
    REPLAN_EVERY,
    is_cached,
    python_module,
    record,
    record_key,
    stamp_cache,
    train_teacher,
)
from snapflow_ros.sim.demo_config import SimDemoConfig, SimTableConfig
from snapflow_ros.sim.evaluation import Candidate, evaluate_task
from snapflow_ros.sim.tasks import get_task
from snapflow_ros.sim.topics import sim_bag_config

POLICIES = (("teacher@10", "teacher", 10), ("teacher@2", "teacher", 2), ("teacher@1", "teacher", 1),
            ("student@1", "student", 1))


_STARTED = time.monotonic()


def log(message: str) -> None:
    elapsed = int(time.monotonic() - _STARTED)
    print(f"sim-table [{elapsed // 60:02d}:{elapsed % 60:02d}]: {message}", file=sys.stderr, flush=True)


def distill_student(config: SimDemoConfig, table: SimTableConfig, bags: list[Path], bag_config: Path,
                    teacher: Path) -> Path:
    """snapflow distill on the seed's bags (the node's service runs the same job: sim-demo shows it)."""
    key = record_key(config) | {"teacher_steps": config.teacher_steps, "student_steps": table.student_steps,
                                 "student_lr": table.student_lr, "consistency_weight": table.consistency_weight,
                                 "batch_size": config.batch_size}
    run = config.workdir / table.student_name
    if is_cached(run, key) and (run / "policy" / "config.json").is_file():
        log(f"seed {config.seed}: student cached in {run / 'policy'}")
        return run / "policy"
    log(f"seed {config.seed}: SnapFlow for {table.student_steps} steps -> {run}")
    subprocess.run(python_module("snapflow_ros.cli.main", "distill", str(teacher), "--bags", *map(str, bags),
                           "--bag-config", str(bag_config), "--output", str(run), "--steps", str(table.student_steps),
                           "--lr", str(table.student_lr), "--consistency-weight", str(table.consistency_weight),
                           "--batch-size", str(config.batch_size), "--holdout-episodes", "0",
                           "--checkpoint-every", "0", "--log-every", str(max(table.student_steps // 10, 1)),
                           "--seed", str(config.seed)), check=True, stdout=subprocess.DEVNULL)
    stamp_cache(run, key)
    return run / "policy"


def evaluate_row(config: SimDemoConfig, task_index: int, candidate: Candidate, episodes: int) -> tuple[dict, bool]:
    """One policy on the seed's episodes of one task, cached per row in seed-N/evaluation/TASK/: a
    student of other settings is evaluated alone, against the teacher rows already there."""
    task = config.tasks[task_index]
    seed = 10_000 * (config.seed + 1) + 1000 * task_index  # the seed's layouts and noise, shared by every policy
    path = config.workdir / "evaluation" / task / f"{candidate.name}-{candidate.checkpoint.parent.name}.json"
    key = record_key(config) | {"checkpoint": str(candidate.checkpoint), "steps": candidate.steps,
                                 "checkpoint_id": checkpoint_id(candidate.checkpoint),  # a retrained one is new
                                 "episodes": episodes, "seed": seed, "replan_every": REPLAN_EVERY}
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("key") == json.loads(json.dumps(key)):
            return cached["row"], True
    done = f"/{episodes}"
    row = evaluate_task(get_task(task, config.task_file), [candidate], episodes, seed=seed,
                        image_size=config.image_size, replan_every=REPLAN_EVERY,
                        progress=lambda line: log(f"seed {config.seed}: {line}") if line.endswith(done) else None,
                        )[candidate.name]
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"key": key, "row": row}, indent=1) + "\n")
    temporary.replace(path)
    return row, False


def evaluate_seed(config: SimDemoConfig, checkpoints: dict[str, Path], episodes: int) -> dict:
    """Every policy on the same episodes of every task."""
    per_task: dict[str, dict] = {task: {} for task in config.tasks}
    reused = 0
    for i, task in enumerate(config.tasks):
        for name, role, steps in POLICIES:
            per_task[task][name], cached = evaluate_row(config, i, Candidate(name, checkpoints[role], steps), episodes)
            reused += cached
    rows = len(config.tasks) * len(POLICIES)
    log(f"seed {config.seed}: evaluation in {config.workdir / 'evaluation'}"
        + (f" ({reused} of {rows} rows cached)" if reused else ""))
    return per_task


def run_seed(table: SimTableConfig, seed: int) -> dict:
    config = table.seed_config(seed)
    config.workdir.mkdir(parents=True, exist_ok=True)
    say = lambda message: log(f"seed {config.seed}: {message}")  # noqa: E731
    bags = record(config, say)
    bag_config = config.workdir / "bag_dataset.yaml"
    sim_bag_config(config.rate_hz).write_yaml(bag_config)
    teacher = train_teacher(config, bags, bag_config, say)
    student = distill_student(config, table, bags, bag_config, teacher)
    return evaluate_seed(config, {"teacher": teacher, "student": student}, table.eval_episodes)


def run_sim_table(config: SimTableConfig) -> dict:
    from snapflow_ros.sim.statistics import markdown_table, sim_table_report, write_seed_plot

    started = time.perf_counter()
    for task in config.tasks:
        get_task(task, config.task_file)  # an unknown task fails now, not after an hour
    seeds = {seed: run_seed(config, seed) for seed in config.seeds}
    outcomes = {task: {name: [seeds[seed][task][name]["episode_successes"] for seed in config.seeds]
                       for name, _, _ in POLICIES} for task in config.tasks}
    report = sim_table_report(outcomes, resamples=config.resamples)
    report["latency_ms_p50"] = {task: {name: [seeds[s][task][name]["latency_ms"]["p50"] for s in config.seeds]
                                       for name, _, _ in POLICIES} for task in config.tasks}
    report["multimodal"] = {task: get_task(task, config.task_file).multimodal for task in config.tasks}
    report["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}
    report["wall_seconds"] = time.perf_counter() - started
    report["student"] = config.student_name
    table = markdown_table(report)
    out = config.report_dir or config.workdir
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "table.md").write_text(table + "\n")
    write_seed_plot(report, out / "success_by_seed.svg")
    print(table)
    log(f"report: {out / 'report.json'}, table: {out / 'table.md'}, plot: {out / 'success_by_seed.svg'} "
        f"({report['wall_seconds']:.0f} s)")
    return report

