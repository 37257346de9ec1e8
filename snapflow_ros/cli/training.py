"""`snapflow train-teacher | distill | eval | bench-distill`: SnapFlow without ROS.

train-teacher and distill hold their --output for the whole run (OUTPUT/.lock, see
snapflow_ros.files.output_lock): a second run on the same directory, from any process, stops at
once naming the first. Started by a job server (snapflow_distill.jobs), they end with it: a parent
that is gone (killed) stops them as a cancel does.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
import threading
import time
from pathlib import Path

import torch

from snapflow_ros.cli.options import (
    add_data_flags,
    add_device_flag,
    add_train_flags,
    check_data_fits,
    device,
    json_outcome,
    progress,
    task_data,
    train_config,
    write_json,
)
from snapflow_ros.errors import ConfigError


def exit_with_parent(poll_s: float = 0.2, grace_s: float = 10.0) -> None:
    """Started by a job server (its pid in $SNAPFLOW_PARENT_PID): once that parent is gone (killed,
    so it could not cancel us), stop as a cancel does (SIGTERM: temporaries removed, no student),
    and exit outright if that has not ended the process after grace_s. A thread, as
    PR_SET_PDEATHSIG would fire when the parent's *thread* that started us ends."""
    from snapflow_distill.jobs import PARENT_PID_ENV

    expected = os.environ.get(PARENT_PID_ENV)
    if not expected or not expected.isdigit():
        return

    def watch() -> None:
        while os.getppid() == int(expected):
            time.sleep(poll_s)
        print(f"snapflow: parent process {expected} is gone; stopping", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(128 + signal.SIGKILL)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def run_lock(args: argparse.Namespace, command: str):
    """OUTPUT held for this run (rank 0 only under torchrun: the ranks share it)."""
    import contextlib

    from snapflow_distill.jobs import JOB_ID_ENV
    from snapflow_ros.files import output_lock

    if int(os.environ.get("RANK", "0")) != 0:
        return contextlib.nullcontext()
    return output_lock(args.output, f"snapflow {command}", os.environ.get(JOB_ID_ENV))


def resumed_report(label: str, fmt: str = "text"):
    """Says that a run continues from a checkpoint: a resumed event (json) or a line on stderr."""
    def report(step: int, checkpoint: Path) -> None:
        if fmt == "json":
            from snapflow_ros.events import ResumedEvent, emit

            emit(ResumedEvent(step, str(checkpoint)))
        print(f"{label}: resuming from step {step} ({checkpoint})", file=sys.stderr, flush=True)
    return report


def stopped_at_once(run):
    """run(args), except that a run stopped by SIGTERM (a cancel, a gone parent) ends as soon as it
    has unwound (temporaries removed, lock released): without the interpreter's finalisation,
    which takes most of a second with torch loaded. Same exit code, 128 + SIGTERM."""
    @functools.wraps(run)
    def wrapped(args: argparse.Namespace):
        try:
            return run(args)
        except SystemExit as stop:
            if stop.code != 128 + signal.SIGTERM:
                raise
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(stop.code)
    return wrapped


@stopped_at_once
def train_teacher(args: argparse.Namespace) -> Path:
    exit_with_parent()
    with run_lock(args, "train-teacher"):
        return _train_teacher(args)


def _train_teacher(args: argparse.Namespace) -> Path:
    from snapflow_distill.synthetic import task_config
    from snapflow_distill.trainer import Trainer
    from snapflow_ros.families.builtin import BuiltinVLA

    torch.manual_seed(args.seed)
    data = task_data(args, args.chunk_size)
    policy = BuiltinVLA(task_config(**data.config, width=args.width, num_layers=args.layers))
    policy.state_normalizer.fit(data.frames[0])
    policy.action_normalizer.fit(data.frames[1])
    trainer = Trainer(policy.to(device(args.device)), data.train, train_config(args, "flow_matching"),
                      args.output, progress("train-teacher", args.progress_format),
                      resumed=resumed_report("train-teacher", args.progress_format))
    trainer.provenance |= data.description
    path = trainer.run()
    print(f"teacher written to {path}")
    return path


@stopped_at_once
def distill(args: argparse.Namespace) -> Path:
    exit_with_parent()
    with run_lock(args, "distill"):  # before anything is loaded: a second run stops at once
        return _distill(args)


def _distill(args: argparse.Namespace) -> Path:
    from snapflow_distill.trainer import Trainer
    from snapflow_ros.families.registry import load_policy
    from snapflow_ros.files import checkpoint_id

    student = load_policy(args.teacher, device(args.device), args.tokenizer)
    data = task_data(args, student.chunk_size)
    check_data_fits(student, data)
    trainer = Trainer(student, data.train, train_config(args, "snapflow"), args.output,
                      progress("distill", args.progress_format),
                      resumed=resumed_report("distill", args.progress_format))
    trainer.provenance |= {"teacher": str(args.teacher), "teacher_id": checkpoint_id(args.teacher),
                           **data.description}
    path = trainer.run()
    print(f"student written to {path}")
    return path


def evaluate_checkpoints(args: argparse.Namespace) -> dict:
    from snapflow_distill.evaluate import Candidate, evaluate
    from snapflow_ros.families.registry import load_policy

    on = device(args.device)
    teacher = load_policy(args.teacher, on, args.tokenizer)
    data = task_data(args, teacher.chunk_size)
    if data.held_out is None:
        raise ConfigError("eval needs held-out data: use --holdout-episodes 1 or more")
    candidates = [Candidate("teacher@10", teacher, 10), Candidate("teacher@1", teacher, 1)]
    if args.student:
        candidates.append(Candidate("student@1", load_policy(args.student, on), 1))
    report = evaluate(candidates, candidates[0], data.held_out, seed=args.seed,
                      latency_repeats=args.latency_repeats, extra=data.metrics,
                      batch_size=args.eval_batch_size)
    report |= {**data.description, "teacher": str(args.teacher), "device": str(on),
               "student": str(args.student) if args.student else None,
               "torch_threads": torch.get_num_threads()}
    return report


def bench_distill(args: argparse.Namespace) -> dict:
    """Teacher from scratch -> SnapFlow student -> evaluation, in one run (ratios side by side)."""
    started = time.perf_counter()
    work = args.workdir
    args.output, args.tokenizer = work / "teacher", None  # the built-in teacher has no tokenizer files
    args.steps, steps_student = args.teacher_steps, args.student_steps
    args.teacher = train_teacher(args)
    args.output, args.steps = work / "student", steps_student
    args.lr = args.student_lr
    args.student = distill(args)
    report = evaluate_checkpoints(args)
    r = report["results"]
    report["latency_ratio_teacher10_over_student1"] = (
        r["teacher@10"]["latency_ms"]["p50"] / r["student@1"]["latency_ms"]["p50"])
    report["seeds"] = {"train": args.seed, "data": args.data_seed, "noise": args.seed}
    report["steps"] = {"teacher": args.teacher_steps, "student": steps_student}
    report["wall_seconds"] = time.perf_counter() - started
    return report


def add_capacity_flags(parser: argparse.ArgumentParser) -> None:
    """The built-in VLA's size (a student has its teacher's)."""
    parser.add_argument("--width", type=int, default=64, help="transformer width (default: 64)")
    parser.add_argument("--layers", type=int, default=2, help="transformer layers (default: 2)")


def add_tokenizer_flag(parser: argparse.ArgumentParser, more: str = "") -> None:
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="LeRobot teacher without a bundled tokenizer/ that is not in the local Hugging "
                        "Face cache: its tokenizer directory (SmolVLA: the VLM's config + processor files)"
                        + more)


def add_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("train-teacher", help="train a flow-matching teacher (built-in VLA) from scratch",
                            description="Train the built-in VLA with the flow-matching loss. Re-running with the "
                            "same --output resumes from its newest checkpoint.")
    p.add_argument("--output", type=Path, required=True, help="run directory; the policy lands in OUTPUT/policy")
    p.add_argument("--chunk-size", type=int, default=8, help="actions per chunk of the new teacher (default: 8)")
    add_capacity_flags(p)
    add_data_flags(p)
    add_train_flags(p, steps=3000, lr=2e-3)
    p.set_defaults(run=json_outcome(train_teacher, done="teacher"))

    p = commands.add_parser("distill", help="SnapFlow-distil a teacher checkpoint into a 1-step student",
                            description="Self-distil TEACHER (a checkpoint directory) with SnapFlow: frozen "
                            "backbone, mixed flow-matching + two-step consistency loss, zero-initialised "
                            "target-time MLP. Re-running with the same --output resumes.")
    p.add_argument("teacher", type=Path, help="teacher checkpoint directory (config.json, model.safetensors, ...)")
    add_tokenizer_flag(p, "; the student bundles it")
    p.add_argument("--output", type=Path, required=True, help="run directory; the student lands in OUTPUT/policy")
    add_data_flags(p)
    add_train_flags(p, steps=2000, lr=1e-3)
    p.set_defaults(run=json_outcome(distill, done="student"))

    p = commands.add_parser("eval", help="offline metrics: teacher@10, naive teacher@1, student@1",
                            description="Held-out action MSE/cosine vs ground truth and vs teacher@10, the "
                            "task's own metrics and per-call latency, as JSON.")
    p.add_argument("teacher", type=Path, help="teacher checkpoint directory")
    p.add_argument("--student", type=Path, default=None, help="student checkpoint directory (optional)")
    add_tokenizer_flag(p)
    p.add_argument("--json", type=Path, default=None, help="also write the report to this file")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling noise (default: 0)")
    p.add_argument("--latency-repeats", type=int, default=50, help="timed calls per policy (default: 50)")
    p.add_argument("--batch-size", dest="eval_batch_size", type=int, default=32,
                   help="held-out samples sampled at once; each keeps its seeded noise whatever "
                   "the batch (default: 32)")
    add_device_flag(p)
    add_data_flags(p)
    p.set_defaults(run=lambda a: write_json(evaluate_checkpoints(a), a.json))

    p = commands.add_parser("bench-distill", help="benchmark: train teacher, distil, evaluate; JSON table",
                            description="On the multi-modal synthetic task: train a teacher, distil a student and "
                            "report MSE of teacher@10, naive teacher@1 and student@1 plus the latency ratio "
                            "teacher@10 / student@1 measured in the same run.")
    p.add_argument("--workdir", type=Path, default=Path("runs/bench-distill"),
                   help="where checkpoints go (default: runs/bench-distill)")
    p.add_argument("--json", type=Path, default=Path("runs/bench-distill/report.json"),
                   help="report file (default: runs/bench-distill/report.json)")
    p.add_argument("--teacher-steps", type=int, default=3000, help="teacher training steps (default: 3000)")
    p.add_argument("--student-steps", type=int, default=2000, help="distillation steps (default: 2000)")
    p.add_argument("--student-lr", type=float, default=1e-3, help="distillation learning rate (default: 1e-3)")
    p.add_argument("--latency-repeats", type=int, default=50, help="timed calls per policy (default: 50)")
    p.add_argument("--chunk-size", type=int, default=8, help="actions per chunk of the teacher (default: 8)")
    add_capacity_flags(p)
    p.add_argument("--eval-batch-size", type=int, default=32,
                   help="held-out samples sampled at once in the evaluation (default: 32)")
    add_data_flags(p)
    add_train_flags(p, steps=None, lr=2e-3)
    p.set_defaults(run=json_outcome(lambda a: write_json(bench_distill(a), a.json)))
