"""`snapflow train-teacher | distill | eval | bench-distill`: the SnapFlow engine without ROS."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from snapflow_ros.errors import ConfigError

TASKS = ("synthetic-detour",)


def _progress(label: str):
    def report(p) -> None:
        print(f"{label}: step {p.step}/{p.total_steps} loss {p.loss:.4f} (fm {p.loss_flow_matching:.4f}, "
              f"consistency {p.loss_consistency:.4f}) {p.steps_per_second:.1f} steps/s "
              f"eta {p.eta_seconds:.0f}s", file=sys.stderr, flush=True)
    return report


@dataclass
class TaskData:
    train: object                       # a ChunkDataset
    held_out: object                    # an InMemoryChunkDataset
    frames: tuple[torch.Tensor, torch.Tensor]  # (states, actions) for normalisation statistics
    config: dict                        # BuiltinVLAConfig fields the data decides
    metrics: Callable | None = None     # task-specific metrics(actions, batch) -> dict
    description: dict = field(default_factory=dict)


def _task_data(args: argparse.Namespace, chunk_size: int) -> TaskData:
    """The synthetic task, or a local LeRobot v3 dataset when --dataset is given."""
    if args.dataset is not None:
        from snapflow_distill.lerobot_data import LeRobotChunkDataset, Subset

        data = LeRobotChunkDataset(args.dataset, chunk_size=chunk_size)
        train_index, held_index = data.episode_split(args.holdout_episodes)
        config = {"state_dim": data.state_dim, "action_dim": data.action_dim,
                  "cameras": tuple(data.cameras), "chunk_size": chunk_size,
                  "joint_names": data.action_names if len(data.action_names) == data.action_dim else ()}
        states, actions = data.frames()
        return TaskData(Subset(data, train_index), data.materialize(held_index),
                        (states[train_index], actions[train_index]), config,
                        description={"dataset": str(args.dataset), "train_frames": len(train_index),
                                     "held_out_frames": len(held_index)})

    from snapflow_distill.synthetic import make_dataset, obstacle_hits

    if args.task not in TASKS:
        raise ConfigError(f"unknown task '{args.task}'; known: {list(TASKS)}")
    dataset, routes = make_dataset(args.samples + args.holdout, seed=args.data_seed,
                                   chunk_size=chunk_size)
    train, held_out = dataset.split(args.holdout)
    held_routes = routes[len(train):]

    def metrics(actions, batch) -> dict[str, float]:
        nearest = ((actions[:, None] - held_routes) ** 2).mean((-1, -2)).min(1).values
        return {"mse_to_nearest_expert_route": float(nearest.mean()),
                "obstacle_hit_rate": float(obstacle_hits(actions, batch["state"]).float().mean())}

    return TaskData(train, held_out, (train.states, train.actions),
                    {"chunk_size": chunk_size}, metrics,
                    {"task": args.task, "data_seed": args.data_seed, "train_samples": len(train),
                     "held_out_samples": len(held_out)})


def _train_config(args: argparse.Namespace, objective: str):
    from snapflow_distill.trainer import TrainConfig

    return TrainConfig(objective=objective, steps=args.steps, batch_size=args.batch_size,
                       learning_rate=args.lr, warmup_steps=min(args.warmup, args.steps),
                       alpha=args.alpha, consistency_weight=args.consistency_weight,
                       ema_decay=args.ema, checkpoint_every=args.checkpoint_every,
                       log_every=args.log_every, seed=args.seed,
                       gradient_checkpointing=args.gradient_checkpointing)


def _device(name: str) -> torch.device:
    if name == "auto":  # under torchrun: this rank's GPU
        from snapflow_distill.distributed import DistributedContext

        return DistributedContext.from_env().default_device()
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


def train_teacher(args: argparse.Namespace) -> Path:
    from snapflow_distill.synthetic import task_config
    from snapflow_distill.trainer import Trainer
    from snapflow_ros.families.builtin import BuiltinVLA

    torch.manual_seed(args.seed)
    data = _task_data(args, args.chunk_size)
    policy = BuiltinVLA(task_config(**data.config))
    policy.state_normalizer.fit(data.frames[0])
    policy.action_normalizer.fit(data.frames[1])
    trainer = Trainer(policy.to(_device(args.device)), data.train, _train_config(args, "flow_matching"),
                      args.output, _progress("train-teacher"))
    trainer.provenance |= data.description
    path = trainer.run()
    print(f"teacher written to {path}")
    return path


def distill(args: argparse.Namespace) -> Path:
    from snapflow_distill.trainer import Trainer
    from snapflow_ros.policy.checkpoint import checkpoint_id, load_policy

    student = load_policy(args.teacher, _device(args.device))
    data = _task_data(args, student.chunk_size)
    trainer = Trainer(student, data.train, _train_config(args, "snapflow"), args.output, _progress("distill"))
    trainer.provenance |= {"teacher": str(args.teacher), "teacher_id": checkpoint_id(args.teacher),
                           **data.description}
    path = trainer.run()
    print(f"student written to {path}")
    return path


def evaluate_checkpoints(args: argparse.Namespace) -> dict:
    from snapflow_distill.evaluate import Candidate, evaluate
    from snapflow_distill.synthetic import obstacle_hits
    from snapflow_ros.policy.checkpoint import load_policy

    teacher = load_policy(args.teacher)
    data = _task_data(args, teacher.chunk_size)
    candidates = [Candidate("teacher@10", teacher, 10), Candidate("teacher@1", teacher, 1)]
    if args.student:
        candidates.append(Candidate("student@1", load_policy(args.student), 1))
    report = evaluate(candidates, candidates[0], data.held_out, seed=args.seed,
                      latency_repeats=args.latency_repeats, extra=data.metrics)
    report |= {**data.description, "teacher": str(args.teacher),
               "student": str(args.student) if args.student else None,
               "torch_threads": torch.get_num_threads()}
    return report


def _write_json(report: dict, path: Path | None) -> None:
    text = json.dumps(report, indent=2)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        print(f"wrote {path}", file=sys.stderr)
    print(text)


def bench_distill(args: argparse.Namespace) -> dict:
    """Teacher from scratch -> SnapFlow student -> evaluation, in one run (ratios side by side)."""
    started = time.perf_counter()
    work = args.workdir
    args.output = work / "teacher"
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


def make_tiny_lerobot(args: argparse.Namespace) -> Path:
    """A tiny random LeRobot checkpoint shaped for the chosen data (tests, demos, benchmarks)."""
    from snapflow_ros.families.lerobot.tiny import build_tiny_teacher

    data = _task_data(args, args.chunk_size)
    path = build_tiny_teacher(args.family, args.output, states=data.frames[0], actions=data.frames[1],
                              cameras=data.config.get("cameras", ("front",)),
                              instructions=list(data.held_out.instructions), chunk_size=args.chunk_size,
                              seed=args.seed)
    print(f"tiny {args.family} checkpoint written to {path}")
    return path


def bench_lerobot(args: argparse.Namespace) -> dict:
    """Per family at tiny size: prefix, one expert step, end to end at 10 and 1 steps (same run)."""
    from snapflow_distill.evaluate import latency_breakdown
    from snapflow_distill.synthetic import task_config
    from snapflow_ros.families.builtin import BuiltinVLA
    from snapflow_ros.families.lerobot.tiny import build_tiny_teacher
    from snapflow_ros.policy.checkpoint import load_policy

    data = _task_data(args, args.chunk_size)
    batch = data.held_out.batch(torch.arange(1))
    report: dict = {"device": str(_device(args.device)), "torch_threads": torch.get_num_threads(),
                    "repeats": args.repeats, "chunk_size": args.chunk_size, "families": {}}
    for family in args.families:
        if family == "builtin":
            torch.manual_seed(args.seed)
            policy = BuiltinVLA(task_config(chunk_size=args.chunk_size))
        else:
            path = args.workdir / family
            if not (path / "config.json").is_file():
                build_tiny_teacher(family, path, states=data.frames[0], actions=data.frames[1],
                                   cameras=("front",), instructions=list(data.held_out.instructions),
                                   chunk_size=args.chunk_size, seed=args.seed)
            policy = load_policy(path)
        policy = policy.to(_device(args.device))
        timing = latency_breakdown(policy, batch, args.repeats)
        p50 = {name: v["p50"] for name, v in timing.items()}
        timing["ratio_end_to_end_10_over_1"] = p50["end_to_end_10_steps"] / p50["end_to_end_1_steps"]
        timing["end_to_end_1_over_prefix_plus_step"] = (
            p50["end_to_end_1_steps"] / (p50["prefix"] + p50["expert_step"]))
        timing["parameters"] = sum(p.numel() for p in policy.parameters())
        report["families"][family] = timing
        print(f"{family}: prefix {p50['prefix']:.2f} ms, step {p50['expert_step']:.2f} ms, "
              f"10 steps {p50['end_to_end_10_steps']:.2f} ms, 1 step {p50['end_to_end_1_steps']:.2f} ms",
              file=sys.stderr)
    return report


def export(args: argparse.Namespace) -> int:
    from snapflow_ros.export.onnx_export import export_policy

    manifest = export_policy(args.checkpoint, args.output, steps=args.steps, opset=args.opset,
                             fp16=args.fp16, monolithic=tuple(args.monolithic))
    print(f"exported {manifest.family} ({manifest.precision}, {manifest.steps} steps) to {args.output}: "
          f"{', '.join(manifest.graphs.values())}")
    return 0


def validate(args: argparse.Namespace) -> int:
    from snapflow_ros.export.validate import validate_export

    report = validate_export(args.export, args.reference, args.threshold, args.seed)
    _write_json(report, args.json)
    for stage, values in report["stages"].items():
        print(f"{stage:12s} max_abs {values['max_abs']:.3e}  cosine {values['cosine']:.8f}", file=sys.stderr)
    verdict = "PASSED" if report["passed"] else f"FAILED (max_abs above {args.threshold:g})"
    print(f"validate: {verdict}", file=sys.stderr)
    return 0 if report["passed"] else 1


def bench(args: argparse.Namespace) -> int:
    from snapflow_ros.runtime.bench import bench_backends

    report = bench_backends(args.teacher, args.student, args.workdir, args.teacher_steps,
                            args.repeats, args.seed, args.ort_threads)
    _write_json(report, args.json)
    for name, ratio in report["ratios_p50"].items():
        print(f"{name}: {ratio:.2f}", file=sys.stderr)
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    def data_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dataset", type=Path, default=None,
                       help="a local LeRobot v3 dataset directory to train/evaluate on; without it, --task")
        p.add_argument("--holdout-episodes", type=int, default=1,
                       help="with --dataset: the last N episodes are held out for evaluation (default: 1)")
        p.add_argument("--task", default=TASKS[0], choices=TASKS,
                       help="generated data when no --dataset is given: the synthetic two-route "
                       "reaching task with a multi-modal expert (default)")
        p.add_argument("--samples", type=int, default=4096, help="--task: training samples (default: 4096)")
        p.add_argument("--holdout", type=int, default=512, help="--task: held-out samples (default: 512)")
        p.add_argument("--data-seed", type=int, default=0, help="--task: seed of the generated data (default: 0)")


    def train_flags(p: argparse.ArgumentParser, steps: int | None, lr: float) -> None:
        if steps is not None:
            p.add_argument("--steps", type=int, default=steps, help=f"optimisation steps (default: {steps})")
        p.add_argument("--batch-size", type=int, default=64, help="batch size (default: 64)")
        p.add_argument("--lr", type=float, default=lr, help=f"peak AdamW learning rate (default: {lr:g})")
        p.add_argument("--warmup", type=int, default=100, help="linear warmup steps before cosine decay (default: 100)")
        p.add_argument("--alpha", type=float, default=0.5, help="SnapFlow: share of samples routed to flow matching (default: 0.5)")
        p.add_argument("--consistency-weight", type=float, default=0.1, help="SnapFlow: lambda, weight of the consistency loss (default: 0.1)")
        p.add_argument("--ema", type=float, default=0.0, help="EMA decay of the saved weights; 0 disables (default: 0)")
        p.add_argument("--checkpoint-every", type=int, default=500, help="steps between resumable checkpoints; 0: final only (default: 500)")
        p.add_argument("--log-every", type=int, default=100, help="steps between progress lines and metrics.jsonl rows (default: 100)")
        p.add_argument("--seed", type=int, default=0, help="seed of initialisation, batches and noise (default: 0)")
        p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when present; default)")
        p.add_argument("--gradient-checkpointing", action="store_true",
                       help="recompute expert activations in backward instead of storing them (full-size models)")

    p = commands.add_parser("train-teacher", help="train a flow-matching teacher (built-in VLA) from scratch",
                            description="Train the built-in VLA with the flow-matching loss. Re-running with the "
                            "same --output resumes from its newest checkpoint.")
    p.add_argument("--output", type=Path, required=True, help="run directory; the policy lands in OUTPUT/policy")
    p.add_argument("--chunk-size", type=int, default=8, help="actions per chunk of the new teacher (default: 8)")
    data_flags(p)
    train_flags(p, steps=3000, lr=2e-3)
    p.set_defaults(run=train_teacher)

    p = commands.add_parser("distill", help="SnapFlow-distil a teacher checkpoint into a 1-step student",
                            description="Self-distil TEACHER (a checkpoint directory) with SnapFlow: frozen "
                            "backbone, mixed flow-matching + two-step consistency loss, zero-initialised "
                            "target-time MLP. Re-running with the same --output resumes.")
    p.add_argument("teacher", type=Path, help="teacher checkpoint directory (config.json, model.safetensors, ...)")
    p.add_argument("--output", type=Path, required=True, help="run directory; the student lands in OUTPUT/policy")
    data_flags(p)
    train_flags(p, steps=2000, lr=1e-3)
    p.set_defaults(run=distill)

    p = commands.add_parser("eval", help="offline metrics: teacher@10, naive teacher@1, student@1",
                            description="Held-out action MSE/cosine vs ground truth and vs teacher@10, the "
                            "task's own metrics and per-call latency, as JSON.")
    p.add_argument("teacher", type=Path, help="teacher checkpoint directory")
    p.add_argument("--student", type=Path, default=None, help="student checkpoint directory (optional)")
    p.add_argument("--json", type=Path, default=None, help="also write the report to this file")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling noise (default: 0)")
    p.add_argument("--latency-repeats", type=int, default=50, help="timed calls per policy (default: 50)")
    data_flags(p)
    p.set_defaults(run=lambda a: _write_json(evaluate_checkpoints(a), a.json))

    p = commands.add_parser("make-tiny-lerobot", help="write a tiny random LeRobot pi0/pi05/smolvla checkpoint",
                            description="Build a tiny random LeRobot checkpoint (real classes and processors, toy "
                            "sizes, bundled tokenizer) whose features and normalisation match the data, "
                            "entirely offline. For trying `snapflow distill` on each family.")
    p.add_argument("--family", required=True, choices=("pi0", "pi05", "smolvla"), help="LeRobot policy family")
    p.add_argument("--output", type=Path, required=True, help="checkpoint directory to write")
    p.add_argument("--chunk-size", type=int, default=8, help="actions per chunk (default: 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
    data_flags(p)
    p.set_defaults(run=make_tiny_lerobot)

    p = commands.add_parser("bench-lerobot", help="benchmark: prefix / expert step / 10 vs 1 steps per family",
                            description="For each family at tiny size (built on first use under --workdir), batch-1 "
                            "latency percentiles of the prefix, one expert step and end-to-end sampling with 10 "
                            "and 1 steps, measured interleaved in one run; JSON.")
    p.add_argument("--families", nargs="+", default=["builtin", "pi0", "pi05", "smolvla"],
                   choices=("builtin", "pi0", "pi05", "smolvla"), help="families to measure (default: all)")
    p.add_argument("--workdir", type=Path, default=Path("runs/bench-lerobot"), help="tiny checkpoints (default: runs/bench-lerobot)")
    p.add_argument("--json", type=Path, default=Path("runs/bench-lerobot/report.json"), help="report file (default: runs/bench-lerobot/report.json)")
    p.add_argument("--repeats", type=int, default=50, help="timed calls per measurement (default: 50)")
    p.add_argument("--chunk-size", type=int, default=8, help="actions per chunk (default: 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    data_flags(p)
    p.set_defaults(run=lambda a: _write_json(bench_lerobot(a), a.json))

    p = commands.add_parser("export", help="decomposed ONNX export: prefix graph + expert graph + manifest",
                            description="Export a checkpoint (built-in, pi0, pi0.5, SmolVLA) as prefix.onnx "
                            "(observation -> per-layer K/V cache) and expert.onnx (x, t, s, cache -> velocity) "
                            "with torch.onnx.export(dynamo=True), check them with onnx.checker, and write "
                            "manifest.json and the weight-free processor. The directory is replaced atomically.")
    p.add_argument("checkpoint", type=Path, help="checkpoint directory")
    p.add_argument("--output", type=Path, required=True, help="export directory to write")
    p.add_argument("--steps", type=int, default=None,
                   help="denoising steps recorded for the runtime (default: 1 for a SnapFlow student, else 10)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default: 18)")
    p.add_argument("--fp16", action="store_true", help="convert the graphs to float16 (inputs/outputs stay as they are)")
    p.add_argument("--monolithic", type=int, nargs="*", default=[],
                   help="also export single graphs running prefix + N steps, for each N given (benchmarks)")
    p.set_defaults(run=export)

    p = commands.add_parser("validate", help="parity of an export against its torch checkpoint",
                            description="Run the export (onnxruntime) and the torch reference on the same real-shaped "
                            "observation and fixed noise; report max abs difference and cosine per stage "
                            "(preprocess, prefix, expert step, end to end). Exit code 1 when over --threshold.")
    p.add_argument("export", type=Path, help="export directory (manifest.json, prefix.onnx, expert.onnx)")
    p.add_argument("--reference", type=Path, required=True, help="torch checkpoint to compare with")
    p.add_argument("--threshold", type=float, default=1e-4, help="largest allowed max abs difference (default: 1e-4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the observation and noise (default: 0)")
    p.add_argument("--json", type=Path, default=None, help="also write the report to this file")
    p.set_defaults(run=validate)

    p = commands.add_parser("bench", help="latency per backend: teacher@N vs student@1, decomposed vs monolithic",
                            description="Export teacher and student (reused when unchanged), then time end-to-end "
                            "sampling at batch 1 with torch and onnxruntime, teacher at N steps and student at 1, "
                            "decomposed and monolithic graphs, interleaved in one run. Writes p50/p95/p99 and ratios.")
    p.add_argument("--teacher", type=Path, required=True, help="teacher checkpoint directory")
    p.add_argument("--student", type=Path, required=True, help="student checkpoint directory")
    p.add_argument("--teacher-steps", type=int, default=10, help="teacher denoising steps (default: 10)")
    p.add_argument("--workdir", type=Path, default=Path("runs/bench"), help="exports go here (default: runs/bench)")
    p.add_argument("--json", type=Path, default=Path("runs/bench/report.json"), help="report file (default: runs/bench/report.json)")
    p.add_argument("--repeats", type=int, default=50, help="timed calls per measurement (default: 50)")
    p.add_argument("--seed", type=int, default=0, help="seed of the observation and noise (default: 0)")
    p.add_argument("--ort-threads", type=int, default=0, help="onnxruntime intra-op threads; 0: its default (default: 0)")
    p.set_defaults(run=bench)

    p = commands.add_parser("bench-distill", help="benchmark: train teacher, distil, evaluate; JSON table",
                            description="On the multi-modal synthetic task: train a teacher, distil a student and "
                            "report MSE of teacher@10, naive teacher@1 and student@1 plus the latency ratio "
                            "teacher@10 / student@1 measured in the same run.")
    p.add_argument("--workdir", type=Path, default=Path("runs/bench-distill"), help="where checkpoints go (default: runs/bench-distill)")
    p.add_argument("--json", type=Path, default=Path("runs/bench-distill/report.json"), help="report file (default: runs/bench-distill/report.json)")
    p.add_argument("--teacher-steps", type=int, default=3000, help="teacher training steps (default: 3000)")
    p.add_argument("--student-steps", type=int, default=2000, help="distillation steps (default: 2000)")
    p.add_argument("--student-lr", type=float, default=1e-3, help="distillation learning rate (default: 1e-3)")
    p.add_argument("--latency-repeats", type=int, default=50, help="timed calls per policy (default: 50)")
    p.add_argument("--chunk-size", type=int, default=8, help="actions per chunk of the teacher (default: 8)")
    data_flags(p)
    train_flags(p, steps=None, lr=2e-3)
    p.set_defaults(run=lambda a: _write_json(bench_distill(a), a.json))
