"""`snapflow make-tiny-lerobot | bench-lerobot`: LeRobot families at toy size, offline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from snapflow_ros.cli.options import add_data_flags, device, task_data, write_json


def make_tiny_lerobot(args: argparse.Namespace) -> Path:
    """A tiny random LeRobot checkpoint shaped for the chosen data (tests, demos, benchmarks)."""
    from snapflow_ros.families.lerobot.tiny import build_tiny_teacher

    data = task_data(args, args.chunk_size)
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

    data = task_data(args, args.chunk_size)
    batch = data.held_out.batch(torch.arange(1))
    report: dict = {"device": str(device(args.device)), "torch_threads": torch.get_num_threads(),
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
        policy = policy.to(device(args.device))
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


def add_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("make-tiny-lerobot", help="write a tiny random LeRobot pi0/pi05/smolvla checkpoint",
                            description="Build a tiny random LeRobot checkpoint (real classes and processors, toy "
                            "sizes, bundled tokenizer) whose features and normalisation match the data, "
                            "entirely offline. For trying `snapflow distill` on each family.")
    p.add_argument("--family", required=True, choices=("pi0", "pi05", "smolvla"), help="LeRobot policy family")
    p.add_argument("--output", type=Path, required=True, help="checkpoint directory to write")
    p.add_argument("--chunk-size", type=int, default=8, help="actions per chunk (default: 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
    add_data_flags(p)
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
    add_data_flags(p)
    p.set_defaults(run=lambda a: write_json(bench_lerobot(a), a.json))
