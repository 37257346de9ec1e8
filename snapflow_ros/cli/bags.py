"""`snapflow make-bags | bag-info | bag-to-lerobot | bench-bags`: ROS 2 bags as training data."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

from snapflow_ros.cli.options import write_json


def _spec(args: argparse.Namespace):
    from snapflow_ros.bags.demo_bags import DemoBagSpec

    return DemoBagSpec(episodes=args.episodes, storage=args.storage, image_format=args.image_format,
                       image_size=args.image_size, command_type=args.command_type, seed=args.seed)


def make_bags(args: argparse.Namespace) -> int:
    from snapflow_ros.bags.demo_bags import write_demo_bags

    spec = _spec(args)
    paths = write_demo_bags(args.output, args.count, spec)
    config_path = args.output / "bag_dataset.yaml"
    spec.dataset_config().write_yaml(config_path)
    for path in paths:
        print(path)
    print(f"dataset config: {config_path}", file=sys.stderr)
    return 0


def bag_info(args: argparse.Namespace) -> int:
    """Topics of each bag and, with --bag-config, what the dataset makes of them."""
    from snapflow_ros.bags.reader import describe_bag

    report: dict = {"bags": {str(b): {t: {"type": m, "messages": n} for t, (m, n) in describe_bag(b).items()}
                             for b in args.bags}}
    if args.bag_config:
        from snapflow_ros.bags.config import BagDatasetConfig
        from snapflow_ros.bags.dataset import load_bag_dataset

        config = BagDatasetConfig.from_yaml(args.bag_config)
        data = load_bag_dataset(args.bags, config, args.chunk_size)
        report["dataset"] = {"samples": len(data), "episodes": int(data.episodes.max()) + 1,
                             "per_bag": data.report,
                             "image_sizes": {c: list(f.shape[1:3]) for c, f in data.frames.items()}}
        report["record_command"] = "ros2 bag record -s mcap " + " ".join(map(shlex.quote, config.topics()))
    write_json(report, None)
    return 0


def bag_to_lerobot(args: argparse.Namespace) -> int:
    from snapflow_ros.bags.config import BagDatasetConfig
    from snapflow_ros.bags.dataset import load_bag_dataset
    from snapflow_ros.bags.to_lerobot import write_lerobot_dataset

    config = BagDatasetConfig.from_yaml(args.bag_config)
    data = load_bag_dataset(args.bags, config, chunk_size=1)
    write_json(write_lerobot_dataset(data, args.output, config.rate_hz, args.repo_id or f"local/{args.output.name}"),
               None)
    return 0


def bench_bags(args: argparse.Namespace) -> int:
    """Bag reading throughput per storage and image format, then SnapFlow steps/s on the built-in
    policy from the same bags, in one run."""
    import torch

    from snapflow_distill.synthetic import task_config
    from snapflow_distill.trainer import TrainConfig, Trainer
    from snapflow_ros.bags.dataset import load_bag_dataset
    from snapflow_ros.bags.demo_bags import write_demo_bags
    from snapflow_ros.families.builtin import BuiltinVLA

    spec = _spec(args)
    reading, data = {}, None
    for storage in ("sqlite3", "mcap"):
        for image_format in ("raw", "compressed"):
            variant = replace(spec, storage=storage, image_format=image_format)
            name = f"{storage}-{image_format}"
            paths = write_demo_bags(args.workdir / name, args.count, variant)
            config = variant.dataset_config()
            timings = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                data = load_bag_dataset(paths, config, chunk_size=8)
                timings.append(time.perf_counter() - started)
            best = min(timings)
            reading[name] = {"samples": len(data), "seconds_best": best, "samples_per_second": len(data) / best,
                             "bag_bytes": sum(f.stat().st_size for p in paths for f in p.iterdir())}
    torch.manual_seed(args.seed)
    model = BuiltinVLA(task_config(state_dim=2, action_dim=2, joint_names=data.action_names))
    model.state_normalizer.fit(data.states)
    model.action_normalizer.fit(data.actions[data.action_masks])
    config = TrainConfig(steps=args.distill_steps, batch_size=args.batch_size, checkpoint_every=0,
                         log_every=args.distill_steps, warmup_steps=0)
    trainer = Trainer(model, data, config, args.workdir / "distill")
    started = time.perf_counter()
    trainer.run()
    report = {"reading": reading, "distillation": {
        "policy": "builtin", "steps": args.distill_steps, "batch_size": args.batch_size,
        "steps_per_second": trainer.last_progress.steps_per_second,
        "wall_seconds_including_save": time.perf_counter() - started},
        "bags_per_variant": args.count, "episodes_per_bag": spec.episodes, "image_size": spec.image_size,
        "torch_threads": torch.get_num_threads()}
    write_json(report, args.json)
    return 0


def _add_spec_flags(p: argparse.ArgumentParser, count: int = 2, episodes: int = 4, image_size: int = 32) -> None:
    from snapflow_ros.bags.demo_bags import COMMAND_TYPES

    p.add_argument("--count", type=int, default=count, help=f"bags to write (default: {count})")
    p.add_argument("--episodes", type=int, default=episodes, help=f"episodes per bag (default: {episodes})")
    p.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3", help="bag storage (default: sqlite3)")
    p.add_argument("--image-format", choices=("raw", "compressed"), default="raw",
                   help="camera as sensor_msgs/Image rgb8 or CompressedImage jpeg (default: raw)")
    p.add_argument("--image-size", type=int, default=image_size,
                   help=f"camera image side in pixels (default: {image_size})")
    p.add_argument("--command-type", choices=sorted(COMMAND_TYPES), default="JointTrajectory",
                   help="message type of /joint_commands (default: JointTrajectory)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first bag; bag i uses seed+i (default: 0)")


def add_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("make-bags", help="write demonstration bags of a simulated reaching robot",
                            description="Write realistic ROS 2 bags (camera, 50 Hz joint states, position "
                            "commands, instruction, episode markers; stamps with transport latency) of the "
                            "synthetic two-route reaching task, plus the bag_dataset.yaml that reads them.")
    p.add_argument("--output", type=Path, required=True, help="directory for the bags (demo_000, ...)")
    _add_spec_flags(p)
    p.set_defaults(run=make_bags)

    p = commands.add_parser("bag-info", help="topics of bags and, with --bag-config, the samples they give",
                            description="List each bag's topics, types and message counts. With --bag-config: "
                            "episodes and samples per bag, skipped ticks, image sizes and the `ros2 bag record` "
                            "command that records those topics.")
    p.add_argument("bags", type=Path, nargs="+", help="bag directories")
    p.add_argument("--bag-config", type=Path, default=None, help="bag dataset YAML (config/bag_dataset.yaml)")
    p.add_argument("--chunk-size", type=int, default=8, help="actions per chunk (default: 8)")
    p.set_defaults(run=bag_info)

    p = commands.add_parser("bag-to-lerobot", help="convert bags into a LeRobot v3 dataset",
                            description="Read bags with --bag-config (same alignment as training) and write a "
                            "LeRobot v3 dataset: images, observation.state, action, task per frame.")
    p.add_argument("bags", type=Path, nargs="+", help="bag directories (sqlite3 or MCAP)")
    p.add_argument("--bag-config", type=Path, required=True, help="bag dataset YAML (config/bag_dataset.yaml)")
    p.add_argument("--output", type=Path, required=True, help="dataset directory to create (must not exist)")
    p.add_argument("--repo-id", default=None, help="dataset repo id recorded in it (default: local/<output name>)")
    p.set_defaults(run=bag_to_lerobot)

    p = commands.add_parser("bench-bags", help="benchmark: bag reading samples/s and distillation steps/s",
                            description="Write demo bags in sqlite3 and MCAP with raw and JPEG images, time "
                            "reading them into samples, then time SnapFlow steps on the built-in policy.")
    _add_spec_flags(p, count=8, episodes=8, image_size=96)
    p.add_argument("--repeats", type=int, default=3, help="timed reads per variant; the best is kept (default: 3)")
    p.add_argument("--distill-steps", type=int, default=100, help="timed SnapFlow steps (default: 100)")
    p.add_argument("--batch-size", type=int, default=32, help="distillation batch size (default: 32)")
    p.add_argument("--workdir", type=Path, default=Path("runs/bench-bags"), help="default: runs/bench-bags")
    p.add_argument("--json", type=Path, default=Path("runs/bench-bags/report.json"),
                   help="report file (default: runs/bench-bags/report.json)")
    p.set_defaults(run=bench_bags)
