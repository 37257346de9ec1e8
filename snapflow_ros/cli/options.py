"""What several `snapflow` commands share: data selection, training flags, device, JSON output."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from snapflow_ros.errors import ConfigError
from snapflow_ros.events import DoneEvent, ErrorEvent, emit

TASKS = ("synthetic-detour",)


def progress(label: str, fmt: str = "text"):
    """Progress lines on stderr; fmt json: progress events on stdout (snapflow_ros/events.py),
    for job servers."""
    def report(p) -> None:
        if fmt == "json":
            emit(p)  # the trainer reports ProgressEvents
            return
        print(f"{label}: step {p.step}/{p.total_steps} loss {p.loss:.4f} (fm {p.loss_flow_matching:.4f}, "
              f"consistency {p.loss_consistency:.4f}) {p.steps_per_second:.1f} steps/s "
              f"eta {p.eta_seconds:.0f}s", file=sys.stderr, flush=True)
    return report


def json_outcome(run: Callable[[argparse.Namespace], object], done: str | None = None):
    """A command's run(args) that, under --progress-format json, also reports how it ended on the
    event channel: a done event (the returned path under key `done`, e.g. "student") or an error
    event for any exception. The exception still propagates, so main's error handler prints the
    human line and chooses the exit code as for every other command."""
    @functools.wraps(run)
    def wrapped(args: argparse.Namespace):
        if getattr(args, "progress_format", "text") != "json":
            return run(args)
        try:
            result = run(args)
        except Exception as error:  # not SystemExit: a cancelled (SIGTERM) job is not a failure
            emit(ErrorEvent.of(error))
            raise
        emit(DoneEvent(**({done: str(result)} if done else {})))
        return result
    return wrapped

@dataclass
class TaskData:
    train: object                       # a ChunkDataset
    held_out: object                    # a dataset with .batch(index); None when nothing is held out
    frames: tuple[torch.Tensor, torch.Tensor]  # (states, actions) for normalisation statistics
    config: dict                        # BuiltinVLAConfig fields the data decides
    metrics: Callable | None = None     # task-specific metrics(actions, batch) -> dict
    description: dict = field(default_factory=dict)


def task_data(args: argparse.Namespace, chunk_size: int) -> TaskData:
    """The synthetic task, a local LeRobot v3 dataset (--dataset) or ROS 2 bags (--bags)."""
    if args.bags:
        return bag_data(args, chunk_size)
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


def bag_data(args: argparse.Namespace, chunk_size: int) -> TaskData:
    from snapflow_ros.bags.config import BagDatasetConfig
    from snapflow_ros.bags.dataset import load_bag_dataset

    if args.bag_config is None:
        raise ConfigError("--bags needs --bag-config: the YAML mapping bag topics to policy inputs "
                          "(see config/bag_dataset.yaml)")
    config = BagDatasetConfig.from_yaml(args.bag_config)
    data = load_bag_dataset(args.bags, config, chunk_size)
    if args.holdout_episodes:
        train, held = data.episode_split(args.holdout_episodes)
        held_out = held.materialize()
    else:
        train, held_out = data, None
    description = {"bags": [str(b) for b in args.bags], "bag_config": config.to_dict(),
                   "train_samples": len(train), "held_out_samples": len(held_out) if held_out else 0,
                   "bag_report": data.report}
    model = {"state_dim": len(config.joint_names), "action_dim": len(config.actions),
             "cameras": tuple(config.cameras), "chunk_size": chunk_size, "joint_names": config.actions}
    return TaskData(train, held_out, (train.states, train.actions[train.action_masks]), model,
                    description=description)


def check_data_fits(policy, data: TaskData) -> None:
    """A teacher and recorded data must agree on cameras, state and action sizes (say which not)."""
    example = policy.example_batch(1)
    expected = {"state_dim": int(example["state"].shape[-1]), "action_dim": policy.action_dim}
    problems = [f"{name}: teacher {value}, data {data.config[name]}" for name, value in expected.items()
                if name in data.config and data.config[name] != value]
    missing = [c for c in example["images"] if c not in data.config.get("cameras", example["images"])]
    if missing:
        problems.append(f"cameras {missing} of the teacher are not in the data ({list(data.config['cameras'])})")
    if problems:
        raise ConfigError("the data does not fit the teacher: " + "; ".join(problems))


def train_config(args: argparse.Namespace, objective: str):
    from snapflow_distill.trainer import TrainConfig

    return TrainConfig(objective=objective, steps=args.steps, batch_size=args.batch_size,
                       learning_rate=args.lr, warmup_steps=min(args.warmup, args.steps),
                       alpha=args.alpha, consistency_weight=args.consistency_weight, max_delay=args.max_delay,
                       ema_decay=args.ema, checkpoint_every=args.checkpoint_every,
                       keep_checkpoints=args.keep_checkpoints, log_every=args.log_every,
                       seed=args.seed, gradient_checkpointing=args.gradient_checkpointing,
                       workers=args.workers)


def device(name: str) -> torch.device:
    """--device: auto is CUDA when present, else CPU; auto and a bare cuda are this rank's GPU
    (cuda:LOCAL_RANK) under torchrun; cpu and cuda:N are taken as given."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    if name in ("auto", "cuda"):
        from snapflow_distill.distributed import DistributedContext

        return DistributedContext.from_env().default_device()
    return torch.device(name)


def write_json(report: dict, path: Path | None) -> None:
    text = json.dumps(report, indent=2)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        print(f"wrote {path}", file=sys.stderr)
    print(text)


def add_data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", type=Path, default=None,
                   help="a local LeRobot v3 dataset directory to train/evaluate on; without it, --task")
    p.add_argument("--bags", type=Path, nargs="+", default=None,
                   help="ROS 2 bag directories (sqlite3 or MCAP) to train/evaluate on, read with --bag-config")
    p.add_argument("--bag-config", type=Path, default=None,
                   help="with --bags: YAML mapping bag topics to policy inputs (see config/bag_dataset.yaml)")
    p.add_argument("--holdout-episodes", type=int, default=1,
                   help="with --dataset or --bags: the last N episodes are held out for evaluation; "
                   "--bags accepts 0 to train on everything (default: 1)")
    p.add_argument("--task", default=TASKS[0], choices=TASKS,
                   help="generated data when no --dataset is given: the synthetic two-route "
                   "reaching task with a multi-modal expert (default)")
    p.add_argument("--samples", type=int, default=4096, help="--task: training samples (default: 4096)")
    p.add_argument("--holdout", type=int, default=512, help="--task: held-out samples (default: 512)")
    p.add_argument("--data-seed", type=int, default=0, help="--task: seed of the generated data (default: 0)")


def add_device_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto",
                   help="cpu, cuda, cuda:N or auto (CUDA when present; default); under torchrun "
                   "auto and cuda are cuda:LOCAL_RANK")


def add_train_flags(p: argparse.ArgumentParser, steps: int | None, lr: float) -> None:
    if steps is not None:
        p.add_argument("--steps", type=int, default=steps, help=f"optimisation steps (default: {steps})")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default: 64)")
    p.add_argument("--lr", type=float, default=lr, help=f"peak AdamW learning rate (default: {lr:g})")
    p.add_argument("--warmup", type=int, default=100, help="linear warmup steps before cosine decay (default: 100)")
    p.add_argument("--alpha", type=float, default=0.5,
                   help="SnapFlow: share of samples routed to flow matching (default: 0.5)")
    p.add_argument("--consistency-weight", type=float, default=0.1,
                   help="SnapFlow: lambda, weight of the consistency loss (default: 0.1)")
    p.add_argument("--max-delay", type=int, default=0,
                   help="real-time chunking: each sample's first d ~ U{0..D} actions are given clean at flow "
                   "time 0 and left out of the loss, so the policy continues a chunk from the actions "
                   "executed during inference (default: 0, off)")
    p.add_argument("--ema", type=float, default=0.0, help="EMA decay of the saved weights; 0 disables (default: 0)")
    p.add_argument("--checkpoint-every", type=int, default=500,
                   help="steps between resumable checkpoints; 0: final only (default: 500)")
    p.add_argument("--keep-checkpoints", type=int, default=2,
                   help="newest resumable checkpoints kept on disk, older ones deleted; 0: keep all (default: 2)")
    p.add_argument("--workers", type=int, default=0,
                   help="DataLoader processes decoding frames (--dataset, --bags) ahead of the training "
                   "step, same batches as without; 0: decode in the step (default: 0)")
    p.add_argument("--log-every", type=int, default=100,
                   help="steps between progress lines and metrics.jsonl rows (default: 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, batches and noise (default: 0)")
    add_device_flag(p)
    p.add_argument("--progress-format", choices=("text", "json"), default="text",
                   help="text: progress lines on stderr; json: progress, done and error events as JSON lines "
                   "on stdout (snapflow_ros/events.py; default: text)")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute expert activations in backward instead of storing them (full-size models)")
