"""LeRobot v3 datasets (a local directory) as a ChunkDataset: action chunks with padding masks.

Only local data: a directory without meta/info.json is an error here, never a hub download.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from snapflow_ros.data.chunks import ChunkSample, InMemoryChunkDataset
from snapflow_ros.errors import ConfigError

IMAGE_PREFIX = "observation.images."


class LeRobotChunkDataset:
    """Frames of a LeRobot dataset, each with the next `chunk_size` actions (padded at episode end).

    cameras: policy camera name -> dataset image key; default: every image feature, named by the
    part after "observation.images.".
    """

    def __init__(self, root: Path, chunk_size: int, cameras: dict[str, str] | None = None,
                 state_key: str = "observation.state", action_key: str = "action") -> None:
        root = Path(root)
        info_path = root / "meta" / "info.json"
        if not info_path.is_file():
            raise ConfigError(f"{root}: not a LeRobot v3 dataset (meta/info.json missing)")
        info = json.loads(info_path.read_text())
        features = info.get("features", {})
        if cameras is None:
            cameras = {k[len(IMAGE_PREFIX):]: k for k, f in features.items()
                       if k.startswith(IMAGE_PREFIX) and f.get("dtype") in ("image", "video")}
        missing = [k for k in (state_key, action_key, *cameras.values()) if k not in features]
        if missing:
            raise ConfigError(f"{root}: features {missing} missing; the dataset has {sorted(features)}")
        if not cameras:
            raise ConfigError(f"{root}: no image features ({IMAGE_PREFIX}*) to use as cameras")
        from lerobot.datasets.lerobot_dataset import LeRobotDataset  # heavy; only when used

        fps = info["fps"]
        self.root = root
        self.cameras = cameras
        self.state_key, self.action_key = state_key, action_key
        self.chunk_size = chunk_size
        # PyAV bundles FFmpeg; torchcodec needs system FFmpeg libraries that may be absent.
        self.dataset = LeRobotDataset(
            f"local/{root.name}", root=root, video_backend="pyav",
            delta_timestamps={action_key: [k / fps for k in range(chunk_size)]})
        self.state_names = tuple(features[state_key].get("names") or ())
        self.action_names = tuple(features[action_key].get("names") or ())
        self.state_dim = int(features[state_key]["shape"][0])
        self.action_dim = int(features[action_key]["shape"][0])

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> ChunkSample:
        item = self.dataset[index]
        images = {}
        for camera, key in self.cameras.items():
            chw = item[key]  # float in [0, 1], (3, H, W)
            images[camera] = (chw.permute(1, 2, 0) * 255.0).round().clamp(0, 255).to(torch.uint8)
        return ChunkSample(images=images, instruction=str(item["task"]).strip(),
                           state=item[self.state_key].float(), actions=item[self.action_key].float(),
                           action_mask=~item[f"{self.action_key}_is_pad"])

    def frames(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(states, actions) of every frame, for fitting normalisation statistics."""
        table = self.dataset.hf_dataset.select_columns([self.state_key, self.action_key]).with_format("numpy")
        return (torch.as_tensor(np.stack(table[self.state_key]), dtype=torch.float32),
                torch.as_tensor(np.stack(table[self.action_key]), dtype=torch.float32))

    def episode_split(self, holdout_episodes: int) -> tuple[list[int], list[int]]:
        """Frame indices of (training, held-out) episodes: the last episodes are held out."""
        starts = list(self.dataset.meta.episodes["dataset_from_index"])
        ends = list(self.dataset.meta.episodes["dataset_to_index"])
        if not 0 < holdout_episodes < len(starts):
            raise ConfigError(f"{self.root}: cannot hold out {holdout_episodes} of {len(starts)} episodes")
        cut = starts[len(starts) - holdout_episodes]
        return list(range(0, cut)), list(range(cut, ends[-1]))

    def materialize(self, indices: list[int]) -> InMemoryChunkDataset:
        """The given frames as an in-memory dataset (held-out evaluation, small training sets)."""
        samples = [self[i] for i in indices]
        return InMemoryChunkDataset(
            images={c: torch.stack([s["images"][c] for s in samples]) for c in self.cameras},
            instructions=[s["instruction"] for s in samples],
            states=torch.stack([s["state"] for s in samples]),
            actions=torch.stack([s["actions"] for s in samples]),
            action_masks=torch.stack([s["action_mask"] for s in samples]),
        )


class Subset:
    """Frames `indices` of a ChunkDataset."""

    def __init__(self, dataset, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> ChunkSample:
        return self.dataset[self.indices[index]]
