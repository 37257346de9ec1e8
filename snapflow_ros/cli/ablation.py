"""`snapflow ablate`: the paper's offline ablation (alpha, lambda, phi) on one teacher, as JSON and
a Markdown table. The logic is snapflow_distill.ablation, imported inside the command only."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from snapflow_ros.cli.options import (
    add_data_flags,
    add_device_flag,
    check_data_fits,
    device,
    json_outcome,
    progress,
    task_data,
    train_config,
    write_json,
)
from snapflow_ros.cli.training import add_capacity_flags, add_tokenizer_flag, train_teacher
from snapflow_ros.errors import ConfigError

if TYPE_CHECKING:  # snapflow_distill is imported inside the command only
    from snapflow_distill.trainer import TrainConfig

DEFAULT_WORKDIR = Path("runs/ablate")
TEACHER_STEPS = 3000
STUDENT_STEPS = 2000


def teacher_for(args: argparse.Namespace) -> tuple[Path, str]:
    """(teacher policy directory, "given" | "trained" | "reused"): --teacher as given, else
    WORKDIR/teacher, trained from scratch as bench-distill does, or reused when a previous run
    of the same configuration and data finished it."""
    from snapflow_distill.ablation import finished_run

    if args.teacher is not None:
        return args.teacher, "given"
    teacher_args = argparse.Namespace(**vars(args))
    teacher_args.output, teacher_args.steps, teacher_args.tokenizer = args.workdir / "teacher", args.teacher_steps, None
    config = train_config(teacher_args, "flow_matching")
    description = task_data(teacher_args, args.chunk_size).description
    if finished_run(teacher_args.output / "policy", config, description):
        print(f"ablate: reusing the finished teacher {teacher_args.output / 'policy'}", file=sys.stderr)
        return teacher_args.output / "policy", "reused"
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON report only
        return train_teacher(teacher_args), "trained"


def student_config(args: argparse.Namespace) -> TrainConfig:
    """What every variant shares: steps, learning rate, batch, seed; the variant sets the loss."""
    student_args = argparse.Namespace(**vars(args))
    student_args.steps, student_args.lr = args.student_steps, args.student_lr
    return train_config(student_args, "snapflow")


def ablate(args: argparse.Namespace) -> dict[str, Any]:
    """Teacher (trained or given) -> one student per variant -> offline metrics -> table."""
    from snapflow_distill.ablation import (
        CLOSED_LOOP_COLUMNS,
        METRIC_COLUMNS,
        PAPER_VARIANTS,
        ablation_report,
        closed_loop,
        evaluate_students,
        markdown_table,
        train_students,
    )
    from snapflow_ros.families.registry import load_policy
    from snapflow_ros.files import checkpoint_id

    if args.closed_loop_task is not None and args.bags is None:
        raise ConfigError(f"--closed-loop-task {args.closed_loop_task} needs students of that task: distil "
                          "them from its recordings (--bags, --bag-config), as sim-demo records them")
    started = time.perf_counter()
    on = device(args.device)
    teacher_path, teacher_source = teacher_for(args)
    teacher_done = time.perf_counter()
    teacher = load_policy(teacher_path, on, args.tokenizer)
    data = task_data(args, teacher.chunk_size)
    check_data_fits(teacher, data)
    if data.held_out is None:
        raise ConfigError("ablate needs held-out data: use --holdout-episodes 1 or more")
    provenance = {"teacher": str(teacher_path), "teacher_id": checkpoint_id(teacher_path), **data.description}
    students = train_students(teacher_path, data.train, student_config(args), PAPER_VARIANTS,
                              args.workdir / "students", provenance, on, args.tokenizer,
                              lambda v: progress(f"ablate [{v.name}]", args.progress_format))
    students_done = time.perf_counter()
    evaluation = evaluate_students(teacher, {name: load_policy(path, on) for name, path in students.items()},
                                   data.held_out, args.seed, data.metrics, args.eval_batch_size,
                                   args.latency_repeats)
    columns = METRIC_COLUMNS
    if args.closed_loop_task is not None:
        rows = closed_loop(args.closed_loop_task, teacher_path, students, args.closed_loop_episodes,
                           args.closed_loop_seed, args.image_size, teacher.chunk_size, args.task_file,
                           lambda line: print(f"ablate closed loop: {line}", file=sys.stderr)
                           if line.endswith(f"/{args.closed_loop_episodes}") else None)
        for name, metrics in rows.items():
            evaluation["results"][name] |= metrics
        columns += CLOSED_LOOP_COLUMNS
    report = ablation_report(
        PAPER_VARIANTS, students, evaluation, **data.description,
        teacher=str(teacher_path), teacher_source=teacher_source,
        steps={"teacher": None if teacher_source == "given" else args.teacher_steps,
               "student": args.student_steps},
        student_learning_rate=args.student_lr, train_batch_size=args.batch_size,
        seeds={"train": args.seed, "data": args.data_seed, "noise": args.seed},
        closed_loop=None if args.closed_loop_task is None else {
            "task": args.closed_loop_task, "episodes": args.closed_loop_episodes, "seed": args.closed_loop_seed,
            "image_size": args.image_size, "replan_every": teacher.chunk_size},
        device=str(on), torch_threads=torch.get_num_threads(),
        wall_seconds={"teacher": teacher_done - started, "students": students_done - teacher_done,
                      "evaluation": time.perf_counter() - students_done,
                      "total": time.perf_counter() - started})
    write_table(markdown_table(report, columns), args.table or args.workdir / "table.md")
    return report


def write_table(table: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(table)
    print(table, file=sys.stderr)
    print(f"wrote {path}", file=sys.stderr)


def add_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "ablate", help="the paper's offline ablation (alpha, lambda, phi): JSON + Markdown table",
        description="Distil one teacher into a student per variant (alpha 0/0.3/0.5/0.7/1 at lambda 0.1, "
        "lambda 0.01/1 at alpha 0.5, phi kept at zero), same data, seed and steps, and report on the "
        "held-out samples, all from one seeded noise: MSE vs teacher@10 and vs ground truth, MSE to the "
        "nearest expert route (mode-aware) and the obstacle hit rate, beside teacher@10, naive teacher@1 "
        "and the paper's numbers. Re-running with the same --workdir reuses finished runs.")
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                   help=f"teacher and students go here (default: {DEFAULT_WORKDIR})")
    p.add_argument("--json", type=Path, default=None,
                   help=f"report file (default: WORKDIR/report.json, {DEFAULT_WORKDIR}/report.json)")
    p.add_argument("--table", type=Path, default=None,
                   help="Markdown table file, also printed to stderr (default: WORKDIR/table.md)")
    p.add_argument("--teacher", type=Path, default=None,
                   help="distil this teacher checkpoint instead of training one in WORKDIR/teacher")
    add_tokenizer_flag(p)
    p.add_argument("--teacher-steps", type=int, default=TEACHER_STEPS,
                   help=f"steps of the teacher trained here (default: {TEACHER_STEPS})")
    p.add_argument("--student-steps", type=int, default=STUDENT_STEPS,
                   help=f"distillation steps of every variant (default: {STUDENT_STEPS})")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of initialisation, batches, loss noise and evaluation noise (default: 0)")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size (default: 64)")
    p.add_argument("--lr", type=float, default=2e-3, help="teacher learning rate (default: 2e-3)")
    p.add_argument("--student-lr", type=float, default=1e-3, help="distillation learning rate (default: 1e-3)")
    p.add_argument("--chunk-size", type=int, default=8,
                   help="actions per chunk of the teacher trained here (default: 8)")
    add_capacity_flags(p)
    p.add_argument("--eval-batch-size", type=int, default=32, help="held-out samples sampled at once (default: 32)")
    p.add_argument("--latency-repeats", type=int, default=10, help="timed calls per row, JSON only (default: 10)")
    p.add_argument("--log-every", type=int, default=100,
                   help="steps between progress lines and metrics.jsonl rows (default: 100)")
    p.add_argument("--progress-format", choices=("text", "json"), default="text",
                   help="text: progress lines on stderr; json: progress, done and error events as JSON lines "
                   "on stdout (default: text)")
    p.add_argument("--closed-loop-task", default=None,
                   help="also run every row closed loop on this simulated task (reach-either, ...) for "
                   "--closed-loop-episodes shared episodes; needs --bags recorded from that task")
    p.add_argument("--closed-loop-episodes", type=int, default=100, help="episodes per row (default: 100)")
    p.add_argument("--closed-loop-seed", type=int, default=0, help="seed of the layouts and noise (default: 0)")
    p.add_argument("--image-size", type=int, default=32, help="--closed-loop-task: camera side in pixels (default: 32)")
    p.add_argument("--task-file", type=Path, default=None,
                   help="--closed-loop-task: a Python file defining TASKS (snapflow_ros.sim.tasks)")
    add_device_flag(p)
    add_data_flags(p)
    # The rest of what train_config reads; alpha and lambda are each variant's own.
    p.set_defaults(warmup=100, max_delay=0, ema=0.0, checkpoint_every=500, keep_checkpoints=2, workers=0,
                   gradient_checkpointing=False, alpha=0.5, consistency_weight=0.1)
    p.set_defaults(run=json_outcome(lambda a: write_json(ablate(a), a.json or a.workdir / "report.json")))
