"""ROS 2 bags as training data (no ROS install): sqlite3 and MCAP, raw and compressed cameras,
every command type, episode rules, stamp alignment, bags never modified, and an error naming the
bag, topic and problem for each bad input."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from snapflow_ros.bags.config import BagDatasetConfig
from snapflow_ros.bags.dataset import load_bag_dataset
from snapflow_ros.bags.demo_bags import DemoBagSpec, write_demo_bag
from snapflow_ros.errors import BagError, ConfigError

SPEC = DemoBagSpec(episodes=3, reach_ticks=10, hold_ticks=4)  # 14 ticks an episode
TICKS = SPEC.reach_ticks + SPEC.hold_ticks


@pytest.fixture(scope="module")
def bags(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bags")
    return {f"{storage}-{fmt}": write_demo_bag(root / f"{storage}-{fmt}",
                                               replace(SPEC, storage=storage, image_format=fmt))
            for storage in ("sqlite3", "mcap") for fmt in ("raw", "compressed")}


def _config(name: str, **overrides) -> BagDatasetConfig:
    return replace(SPEC, image_format=name.split("-")[1]).dataset_config(**overrides)


def _fingerprint(bag: Path) -> dict[str, tuple[str, int]]:
    return {f.name: (hashlib.sha256(f.read_bytes()).hexdigest(), f.stat().st_mtime_ns) for f in sorted(bag.iterdir())}


def test_samples_from_sqlite3_and_mcap_agree_and_bags_stay_untouched(bags):
    before = {name: _fingerprint(path) for name, path in bags.items()}
    data = {name: load_bag_dataset([path], _config(name), chunk_size=6) for name, path in bags.items()}
    reference = data["sqlite3-raw"]
    assert len(reference) == SPEC.episodes * TICKS
    assert reference.episodes.tolist() == [e for e in range(SPEC.episodes) for _ in range(TICKS)]
    for name, other in data.items():
        assert torch.equal(other.states, reference.states), name
        assert torch.equal(other.actions, reference.actions) and torch.equal(other.action_masks, reference.action_masks)
    assert torch.equal(data["mcap-raw"].frames["front"], reference.frames["front"])
    jpeg_error = (data["mcap-compressed"].frames["front"].float() - reference.frames["front"].float()).abs().mean()
    assert 0 < jpeg_error < 10  # lossy JPEG, same pictures
    assert reference.instructions == ["reach the green target"] * len(reference)
    assert {name: _fingerprint(path) for name, path in bags.items()} == before


def test_chunks_are_the_recorded_commands_masked_at_episode_end(bags):
    data = load_bag_dataset([bags["sqlite3-raw"]], SPEC.dataset_config(), chunk_size=6)
    # Consecutive samples of an episode see the command stream shifted by one tick.
    assert torch.equal(data.actions[0, 1:], data.actions[1, :-1])
    last = TICKS - 1
    assert data.action_masks[last].tolist() == [True] + [False] * 5
    assert data.action_masks[last - 2].tolist() == [True] * 3 + [False] * 3
    # Padding repeats the last real action; the next episode starts afresh.
    assert torch.equal(data.actions[last, 1:], data.actions[last, :1].expand(5, 2))
    assert data.action_masks[TICKS].all()
    # The state lags the command (the servo follows it) and starts at the episode's start pose.
    hold = data.actions[last, 0]
    assert torch.allclose(data.states[last], hold, atol=0.02)


def test_every_command_type_gives_the_same_actions(tmp_path, bags):
    reference = load_bag_dataset([bags["sqlite3-raw"]], SPEC.dataset_config(), chunk_size=4)
    for command_type in ("JointState", "Float64MultiArray", "ActionChunk"):
        spec = replace(SPEC, command_type=command_type)
        path = write_demo_bag(tmp_path / command_type, spec)  # ActionChunk: a custom type, defined in the bag
        data = load_bag_dataset([path], spec.dataset_config(), chunk_size=4)
        assert torch.allclose(data.actions, reference.actions, atol=1e-6), command_type


def test_next_state_actions_and_episode_rules(bags):
    bag = bags["mcap-raw"]
    data = load_bag_dataset([bag], SPEC.dataset_config(action_source="next_state"), chunk_size=3)
    assert len(data) == SPEC.episodes * (TICKS - 1)  # the last tick of an episode has no next state
    first_episode = data.states[: TICKS - 1]
    assert torch.equal(data.actions[: TICKS - 2, 0], first_episode[1:])
    by_topic = load_bag_dataset([bag], SPEC.dataset_config(episode_split="topic"), chunk_size=3)
    assert int(by_topic.episodes.max()) + 1 == SPEC.episodes
    whole = load_bag_dataset([bag], SPEC.dataset_config(episode_split="bag"), chunk_size=3)
    assert int(whole.episodes.max()) == 0
    assert whole.report[str(bag)]["skipped_ticks"]["stale_or_missing_input"] > 0  # the idle gaps


def test_staleness_limit_skips_ticks_without_a_fresh_frame(bags):
    loose = load_bag_dataset([bags["sqlite3-raw"]], SPEC.dataset_config(), chunk_size=4)
    # 15 Hz camera frames on a 50 Hz clock: at every other 10 Hz tick the newest frame is 20 ms old.
    strict = load_bag_dataset([bags["sqlite3-raw"]], SPEC.dataset_config(max_staleness=0.015), chunk_size=4)
    skipped = strict.report[str(bags["sqlite3-raw"])]["skipped_ticks"]["stale_or_missing_input"]
    assert len(loose) // 3 < skipped < len(loose) * 2 // 3 and len(strict) == len(loose) - skipped


def test_latest_at_respects_age_and_episode_start():
    from snapflow_ros.bags.alignment import latest_at, split_by_gap

    stamps = np.array([0, 100, 200, 1000], dtype=np.int64)
    ticks = np.array([-5, 50, 150, 260, 350, 1000], dtype=np.int64)
    assert latest_at(stamps, ticks, max_age_ns=60, not_before_ns=0).tolist() == [-1, 0, 1, 2, -1, 3]
    assert latest_at(stamps, ticks, max_age_ns=60, not_before_ns=100).tolist() == [-1, -1, 1, 2, -1, 3]
    assert split_by_gap(stamps, gap_ns=500) == [(0, 200), (1000, 1000)]


def test_each_observation_is_paired_with_the_command_that_answered_it():
    from snapflow_ros.bags.alignment import following_command

    commands = np.array([2, 103, 205, 460], dtype=np.int64)  # issued just after observations 0, 100, 200
    observed = np.array([0, 100, 199, 300, 400, 650], dtype=np.int64)
    # 199: the command 6 ns later answers it (jitter); 300, 400: none within a period, so the one
    # still in force if fresh enough; 650: too old.
    assert following_command(commands, observed, period_ns=100, max_age_ns=150, not_before_ns=0).tolist() == \
        [0, 1, 2, 2, 3, -1]


def test_several_bags_concatenate_with_distinct_episodes(tmp_path, bags):
    second = write_demo_bag(tmp_path / "second", replace(SPEC, seed=7))
    data = load_bag_dataset([bags["sqlite3-raw"], second], SPEC.dataset_config(), chunk_size=4)
    assert int(data.episodes.max()) + 1 == 2 * SPEC.episodes
    train, held = data.episode_split(2)
    assert len(held) == 2 * TICKS and len(train) + len(held) == len(data)
    batch = held.batch(torch.arange(3))
    assert batch["images"]["front"].shape == (3, 32, 32, 3) and batch["state"].shape == (3, 2)


# --- bad input: each names the bag, the topic and the problem ---------------------------------------
def test_missing_topic_is_named(bags):
    config = SPEC.dataset_config(cameras={"front": "/camera/wrist/image_raw"})
    with pytest.raises(BagError, match=r"bag .*sqlite3-raw: topic /camera/wrist/image_raw not found; the bag has"):
        load_bag_dataset([bags["sqlite3-raw"]], config, chunk_size=4)


def test_mismatched_joint_names_are_named(bags):
    config = SPEC.dataset_config(joint_names=("hand_x", "elbow"))
    with pytest.raises(BagError, match=r"sqlite3-raw: topic /joint_states: joints \['elbow'\] missing from 'name'"):
        load_bag_dataset([bags["sqlite3-raw"]], config, chunk_size=4)
    config = SPEC.dataset_config(action_names=("hand_x", "wrist"))
    with pytest.raises(BagError, match=r"topic /joint_commands: joints \['wrist'\] missing from 'joint_names'"):
        load_bag_dataset([bags["mcap-raw"]], config, chunk_size=4)


def test_wrong_image_size_is_named(tmp_path, bags):
    config = SPEC.dataset_config(image_size={"front": (48, 48)})
    with pytest.raises(BagError, match=r"topic /camera/front/image_raw: image at t=.*s is 32x32, expected 48x48"):
        load_bag_dataset([bags["sqlite3-raw"]], config, chunk_size=4)
    larger = write_demo_bag(tmp_path / "larger", replace(SPEC, image_size=40))
    with pytest.raises(BagError, match=r"larger: topic /camera/front/image_raw: images are 40x40, expected 32x32"):
        load_bag_dataset([bags["sqlite3-raw"], larger], SPEC.dataset_config(), chunk_size=4)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_truncated_bag_is_named(tmp_path, bags, storage):
    broken = tmp_path / f"truncated-{storage}"
    shutil.copytree(bags[f"{storage}-raw"], broken)
    data_file = next(f for f in broken.iterdir() if f.suffix in (".db3", ".mcap"))
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    with pytest.raises(BagError, match=rf"bag {broken}: (cannot open|unreadable)"):
        load_bag_dataset([broken], SPEC.dataset_config(), chunk_size=4)


def test_unreadable_bag_directories_are_named(tmp_path, bags):
    with pytest.raises(BagError, match="no such file or directory"):
        load_bag_dataset([tmp_path / "nope"], SPEC.dataset_config(), chunk_size=4)
    interrupted = tmp_path / "interrupted"
    shutil.copytree(bags["sqlite3-raw"], interrupted)
    (interrupted / "metadata.yaml").unlink()
    with pytest.raises(BagError, match="metadata.yaml missing .*ros2 bag reindex"):
        load_bag_dataset([interrupted], SPEC.dataset_config(), chunk_size=4)


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="'action_source' = 'teleop'"):
        BagDatasetConfig(cameras={}, joint_names=("a",), action_source="teleop")
    path = tmp_path / "bad.yaml"
    path.write_text("cameras: {front: /cam}\njoint_names: [a]\nrate: 10\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown fields \['rate'\]"):
        BagDatasetConfig.from_yaml(path)
    config = SPEC.dataset_config()
    config.write_yaml(path)
    assert BagDatasetConfig.from_yaml(path) == config
