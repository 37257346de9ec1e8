"""A BagChunkDataset as a LeRobot v3 dataset, so the same recordings serve LeRobot training.

One frame per sample: observation.images.<camera> (stored as PNG images, lossless),
observation.state (named by joint), action (the action in force after the observation, named)
and the instruction as the task. LeRobot frames are contiguous in time, so a recorded episode
with skipped ticks (a stale input) becomes several LeRobot episodes, split at the holes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from snapflow_ros.bags.dataset import BagChunkDataset
from snapflow_ros.errors import ConfigError
from snapflow_ros.files import atomic_path


def contiguous_runs(data: BagChunkDataset, period_ns: int) -> list[torch.Tensor]:
    """Sample indices of each run of consecutive ticks within one recorded episode."""
    breaks = (data.episodes[1:] != data.episodes[:-1]) | (data.ticks[1:] - data.ticks[:-1] != period_ns)
    starts = [0, *(torch.nonzero(breaks).squeeze(1) + 1).tolist(), len(data)]
    return [torch.arange(a, b) for a, b in zip(starts[:-1], starts[1:]) if b > a]


def write_lerobot_dataset(data: BagChunkDataset, root: Path, rate_hz: float, repo_id: str) -> dict:
    """Writes `data` at `root` (atomically; an existing root is an error). Returns a summary."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = Path(root)
    if root.exists():
        raise ConfigError(f"{root} already exists; choose a new output directory")
    fps = round(rate_hz)
    if abs(fps - rate_hz) > 1e-9:
        raise ConfigError(f"LeRobot datasets need an integer frame rate; rate_hz is {rate_hz:g}")
    features = {f"observation.images.{camera}": {"dtype": "image", "shape": tuple(frames.shape[1:]),
                                                  "names": ["height", "width", "channels"]}
                for camera, frames in data.frames.items()}
    features["observation.state"] = {"dtype": "float32", "shape": (len(data.joint_names),),
                                     "names": list(data.joint_names)}
    features["action"] = {"dtype": "float32", "shape": (len(data.action_names),), "names": list(data.action_names)}
    runs = contiguous_runs(data, round(1e9 / rate_hz))
    with atomic_path(root) as staging:
        dataset = LeRobotDataset.create(repo_id, fps=fps, features=features, root=staging, use_videos=False)
        for run in runs:
            for i in run.tolist():
                sample = data[i]
                frame = {f"observation.images.{c}": image.numpy() for c, image in sample["images"].items()}
                frame |= {"observation.state": sample["state"].numpy(), "action": sample["actions"][0].numpy(),
                          "task": sample["instruction"]}
                dataset.add_frame(frame)
            dataset.save_episode()
        dataset.finalize()
    return {"output": str(root), "episodes": len(runs), "frames": len(data), "fps": fps,
            "recorded_episodes": int(data.episodes.max()) + 1, "features": sorted(features)}
