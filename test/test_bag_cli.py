"""The bag commands end to end: make-bags -> bag-info -> bag-to-lerobot (read back by LeRobot
with the same samples) and train-teacher / distill / eval on --bags."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SNAPFLOW = str(Path(sys.executable).parent / "snapflow")


def _run(*args: str) -> str:
    result = subprocess.run([SNAPFLOW, *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("cli")
    out = _run("make-bags", "--output", str(root / "bags"), "--count", "2", "--episodes", "3", "--storage", "mcap",
               "--image-format", "compressed")
    return {"bags": out.split(), "config": str(root / "bags" / "bag_dataset.yaml"), "root": root}


def test_bag_info_reports_topics_samples_and_the_record_command(made):
    report = json.loads(_run("bag-info", *made["bags"], "--bag-config", made["config"]))
    topics = report["bags"][made["bags"][0]]
    assert topics["/camera/front/compressed"]["type"] == "sensor_msgs/msg/CompressedImage"
    assert topics["/joint_states"]["messages"] == 3 * 90
    assert report["dataset"]["episodes"] == 6 and report["dataset"]["samples"] == 6 * 18
    assert report["record_command"].startswith("ros2 bag record -s mcap /camera/front/compressed /joint_states")


def test_bag_to_lerobot_round_trips_through_lerobot(made):
    from snapflow_distill.lerobot_data import LeRobotChunkDataset
    from snapflow_ros.bags.config import BagDatasetConfig
    from snapflow_ros.bags.dataset import load_bag_dataset

    output = made["root"] / "lerobot"
    summary = json.loads(_run("bag-to-lerobot", *made["bags"], "--bag-config", made["config"], "--output", str(output)))
    assert summary["episodes"] == 6 and summary["frames"] == 6 * 18 and summary["fps"] == 10
    ours = load_bag_dataset([Path(b) for b in made["bags"]], BagDatasetConfig.from_yaml(Path(made["config"])),
                            chunk_size=5)
    theirs = LeRobotChunkDataset(output, chunk_size=5)
    assert len(theirs) == len(ours) and tuple(theirs.cameras) == ("front",)
    for i in (0, 17, 40, len(ours) - 1):
        a, b = ours[i], theirs[i]
        assert torch.equal(a["images"]["front"], b["images"]["front"])  # PNG frames: lossless
        assert torch.equal(a["state"], b["state"]) and a["instruction"] == b["instruction"]
        assert torch.equal(a["action_mask"], b["action_mask"])
        assert torch.equal(a["actions"][a["action_mask"]], b["actions"][b["action_mask"]])
    result = subprocess.run([SNAPFLOW, "bag-to-lerobot", *made["bags"], "--bag-config", made["config"],
                             "--output", str(output)], capture_output=True, text=True)
    assert result.returncode == 2 and "already exists" in result.stderr


@pytest.mark.slow
def test_train_distill_eval_on_bags(made):
    root = made["root"]
    data = ["--bags", *made["bags"], "--bag-config", made["config"], "--batch-size", "8", "--log-every", "5",
            "--checkpoint-every", "0"]
    _run("train-teacher", "--output", str(root / "teacher"), "--steps", "10", "--chunk-size", "6", *data)
    _run("distill", str(root / "teacher" / "policy"), "--output", str(root / "student"), "--steps", "10", *data)
    report = json.loads(_run("eval", str(root / "teacher" / "policy"), "--student", str(root / "student" / "policy"),
                             "--latency-repeats", "2", *data[:5]))
    assert report["samples"] == 18  # the last episode is held out
    assert set(report["results"]) == {"teacher@10", "teacher@1", "student@1"}
    provenance = json.loads((root / "student" / "policy" / "provenance.json").read_text())
    assert provenance["bag_config"]["cameras"] == {"front": "/camera/front/compressed"}


@pytest.mark.slow
def test_lerobot_teacher_distils_from_bags(made):
    root = made["root"]
    data = ["--bags", *made["bags"], "--bag-config", made["config"]]
    _run("make-tiny-lerobot", "--family", "pi05", "--output", str(root / "pi05"), *data)
    _run("distill", str(root / "pi05"), "--output", str(root / "pi05-student"), "--steps", "4", "--batch-size", "4",
         "--log-every", "2", *data)
    from snapflow_ros.families.registry import load_policy

    student = root / "pi05-student" / "policy"
    assert load_policy(student).family == "pi05"
    assert json.loads((student / "provenance.json").read_text())["bags"] == made["bags"]
