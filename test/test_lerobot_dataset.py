"""Local LeRobot v3 datasets as training data: action chunks with padding at episode ends,
clear errors for missing data, and the snapflow commands on --dataset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from snapflow_ros.errors import ConfigError

FPS = 10
EPISODE_FRAMES = (12, 9, 10)


@pytest.fixture(scope="module")
def lerobot_root(tmp_path_factory) -> Path:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = tmp_path_factory.mktemp("lerobot") / "arm_demo"
    features = {
        "observation.images.wrist": {"dtype": "image", "shape": (24, 24, 3),
                                     "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (3,), "names": ["j1", "j2", "j3"]},
        "action": {"dtype": "float32", "shape": (2,), "names": ["x", "y"]},
    }
    dataset = LeRobotDataset.create("local/arm_demo", fps=FPS, features=features, root=root,
                                    use_videos=False)
    for episode, frames in enumerate(EPISODE_FRAMES):
        for i in range(frames):
            dataset.add_frame({
                "observation.images.wrist": np.full((24, 24, 3), 10 * i, np.uint8),
                "observation.state": np.array([i, episode, 0.5], np.float32),
                "action": np.array([100 * episode + i, -i], np.float32),
                "task": f"stack block {episode}",
            })
        dataset.save_episode()
    dataset.finalize()
    return root


def test_chunks_are_future_actions_padded_at_episode_end(lerobot_root):
    from snapflow_distill.lerobot_data import LeRobotChunkDataset

    data = LeRobotChunkDataset(lerobot_root, chunk_size=4)
    assert len(data) == sum(EPISODE_FRAMES)
    assert (data.state_dim, data.action_dim, tuple(data.cameras)) == (3, 2, ("wrist",))
    last_of_first = data[EPISODE_FRAMES[0] - 2]  # two frames before episode 0 ends
    assert last_of_first["action_mask"].tolist() == [True, True, False, False]
    assert last_of_first["actions"][:2, 0].tolist() == [10.0, 11.0]
    sample = data[EPISODE_FRAMES[0] + 1]  # episode 1, frame 1
    assert sample["action_mask"].all() and sample["actions"][:, 0].tolist() == [101, 102, 103, 104]
    assert sample["instruction"] == "stack block 1"
    assert sample["images"]["wrist"].dtype == torch.uint8
    assert sample["images"]["wrist"].shape == (24, 24, 3) and int(sample["images"]["wrist"][0, 0, 0]) == 10
    train, held = data.episode_split(1)
    assert held == list(range(sum(EPISODE_FRAMES[:2]), sum(EPISODE_FRAMES)))
    assert len(train) + len(held) == len(data)


def test_not_a_dataset_and_missing_feature_are_named(lerobot_root, tmp_path):
    from snapflow_distill.lerobot_data import LeRobotChunkDataset

    with pytest.raises(ConfigError, match="meta/info.json missing"):
        LeRobotChunkDataset(tmp_path, chunk_size=4)
    with pytest.raises(ConfigError, match=r"features \['observation.effort'\] missing"):
        LeRobotChunkDataset(lerobot_root, chunk_size=4, state_key="observation.effort")


@pytest.mark.slow
def test_train_distill_eval_on_a_lerobot_dataset(lerobot_root, tmp_path):
    snapflow = str(Path(sys.executable).parent / "snapflow")
    common = ["--dataset", str(lerobot_root), "--batch-size", "4", "--log-every", "2",
              "--checkpoint-every", "0"]

    def run(*args):
        result = subprocess.run([snapflow, *args], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    run("train-teacher", "--output", str(tmp_path / "t"), "--steps", "4", "--chunk-size", "4", *common)
    config = json.loads((tmp_path / "t" / "policy" / "config.json").read_text())
    assert (config["state_dim"], config["action_dim"], config["cameras"]) == (3, 2, ["wrist"])
    assert config["joint_names"] == ["x", "y"]
    run("distill", str(tmp_path / "t" / "policy"), "--output", str(tmp_path / "s"), "--steps", "4", *common)
    report = json.loads(run("eval", str(tmp_path / "t" / "policy"), "--student",
                            str(tmp_path / "s" / "policy"), "--latency-repeats", "2", *common[:2]).stdout)
    assert set(report["results"]) == {"teacher@10", "teacher@1", "student@1"}
    assert report["held_out_frames"] == EPISODE_FRAMES[-1]
