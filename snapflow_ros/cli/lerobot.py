"""`snapflow make-lerobot | bench-lerobot`: LeRobot families at any size, offline."""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

from snapflow_ros.cli.options import add_data_flags, device, task_data, write_json

FAMILIES = ("pi0", "pi05", "smolvla")
SIZES = ("tiny", "width", "full")


def _build(args: argparse.Namespace, family: str, output: Path, data) -> Path:
    from snapflow_ros.families.lerobot.builders import build_lerobot_checkpoint

    return build_lerobot_checkpoint(
        family, output, states=data.frames[0], actions=data.frames[1],
        cameras=tuple(data.config.get("cameras", ("front",))), instructions=list(data.held_out.instructions),
        size=args.size, dtype=args.dtype, chunk_size=chunk_size(args), seed=args.seed)


def chunk_size(args: argparse.Namespace) -> int:
    return args.chunk_size or (8 if args.size == "tiny" else 50)  # 50: LeRobot's default


def make_lerobot(args: argparse.Namespace) -> Path:
    """A random LeRobot checkpoint shaped for the chosen data (tests, demos, benchmarks)."""
    data = task_data(args, chunk_size(args))
    started = time.perf_counter()
    path = _build(args, args.family, args.output, data)
    print(f"{args.size} {args.family} checkpoint ({args.dtype}) written to {path} in "
          f"{time.perf_counter() - started:.0f} s, peak RSS {peak_rss_gb():.1f} GB")
    return path


def peak_rss_gb() -> float:
    """This process's peak resident memory (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def bench_lerobot(args: argparse.Namespace) -> dict:
    """Per family: prefix, one expert step, end to end at 10 and 1 steps (same run, batch 1)."""
    from snapflow_distill.evaluate import latency_breakdown
    from snapflow_distill.synthetic import task_config
    from snapflow_ros.families.builtin import BuiltinVLA
    from snapflow_ros.families.registry import load_policy

    data = task_data(args, chunk_size(args))
    report: dict = {"device": str(device(args.device)), "torch_threads": torch.get_num_threads(),
                    "repeats": args.repeats, "size": args.size, "dtype": args.dtype, "families": {}}
    for family in args.families:
        started = time.perf_counter()
        if family == "builtin":
            torch.manual_seed(args.seed)
            policy = BuiltinVLA(task_config(chunk_size=chunk_size(args)))
            batch = data.held_out.batch(torch.arange(1))
        else:
            path = args.workdir / f"{args.size}-{args.dtype}" / family
            if not (path / "config.json").is_file():
                _build(args, family, path, data)
            policy = load_policy(path)
            batch = policy.example_batch(1)  # real-shaped: the checkpoint's cameras and image size
        policy = policy.to(device(args.device))
        loaded = time.perf_counter() - started
        timing = latency_breakdown(policy, batch, args.repeats)
        p50 = {name: v["p50"] for name, v in timing.items()}
        timing["ratio_end_to_end_10_over_1"] = p50["end_to_end_10_steps"] / p50["end_to_end_1_steps"]
        timing["end_to_end_1_over_prefix_plus_step"] = (
            p50["end_to_end_1_steps"] / (p50["prefix"] + p50["expert_step"]))
        timing["parameters"] = sum(p.numel() for p in policy.parameters())
        timing["chunk_size"] = policy.chunk_size
        timing["build_or_load_seconds"] = loaded
        timing["peak_rss_gb_so_far"] = peak_rss_gb()
        report["families"][family] = timing
        print(f"{family}: prefix {p50['prefix']:.2f} ms, step {p50['expert_step']:.2f} ms, "
              f"10 steps {p50['end_to_end_10_steps']:.2f} ms, 1 step {p50['end_to_end_1_steps']:.2f} ms",
              file=sys.stderr)
        del policy
    return report


def _size_flags(p: argparse.ArgumentParser, chunk_default: str) -> None:
    p.add_argument("--size", choices=SIZES, default="tiny",
                   help="tiny (toy widths), width (full widths and vocabulary, 1-2 layers per tower) or "
                   "full (the published architecture); see families/lerobot/architectures.py (default: tiny)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="parameter dtype of pi0/pi0.5 (LeRobot's `dtype`; bfloat16 builds in bfloat16 "
                   "directly, half the memory); SmolVLA is float32 (default: float32)")
    p.add_argument("--chunk-size", type=int, default=None, help=f"actions per chunk (default: {chunk_default})")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")


def add_commands(commands: argparse._SubParsersAction) -> None:
    for name in ("make-lerobot", "make-tiny-lerobot"):  # the second: the older name, tiny by default
        p = commands.add_parser(name,
                                help="write a random LeRobot pi0/pi05/smolvla checkpoint (tiny, width or full size)",
                                description="Build a random LeRobot checkpoint (real classes and processors, bundled "
                                "tokenizer, offline) of the chosen size whose features and normalisation match the "
                                "data. --size full is the published architecture.")
        p.add_argument("--family", required=True, choices=FAMILIES, help="LeRobot policy family")
        p.add_argument("--output", type=Path, required=True, help="checkpoint directory to write")
        _size_flags(p, "8 at tiny size, else LeRobot's 50")
        add_data_flags(p)
        p.set_defaults(run=make_lerobot)

    p = commands.add_parser("bench-lerobot", help="benchmark: prefix / expert step / 10 vs 1 steps per family",
                            description="For each family at the chosen size (built on first use under --workdir), "
                            "batch-1 latency percentiles of the prefix, one expert step and end-to-end sampling with "
                            "10 and 1 steps, measured interleaved in one run; JSON.")
    p.add_argument("--families", nargs="+", default=["builtin", *FAMILIES],
                   choices=("builtin", *FAMILIES), help="families to measure (default: all)")
    p.add_argument("--workdir", type=Path, default=Path("runs/bench-lerobot"),
                   help="checkpoints, under SIZE-DTYPE/FAMILY (default: runs/bench-lerobot)")
    p.add_argument("--json", type=Path, default=Path("runs/bench-lerobot/report.json"),
                   help="report file (default: runs/bench-lerobot/report.json)")
    p.add_argument("--repeats", type=int, default=50, help="timed calls per measurement (default: 50)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    _size_flags(p, "8 at tiny size, else LeRobot's 50")
    add_data_flags(p)
    p.set_defaults(run=lambda a: write_json(bench_lerobot(a), a.json))
