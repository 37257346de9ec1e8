"""Checkpoint directories: round trip, strict loading that names what is wrong, atomic writes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from snapflow_ros.errors import CheckpointError, ConfigError
from snapflow_ros.families.builtin import BuiltinVLA, BuiltinVLAConfig
from snapflow_ros.families.registry import load_policy
from snapflow_ros.files import WEIGHTS, atomic_directory, checkpoint_id, save_policy


def _small() -> BuiltinVLA:
    torch.manual_seed(0)
    return BuiltinVLA(BuiltinVLAConfig(width=16, num_heads=2, num_layers=1, chunk_size=4))


def test_round_trip_is_exact(tmp_path):
    policy = _small()
    policy.action_normalizer.mean.fill_(0.5)
    loaded = load_policy(save_policy(policy, tmp_path / "ckpt", {"note": "x"}))
    a, b = policy.state_dict(), loaded.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "ckpt" / "provenance.json").read_text()) == {"note": "x"}
    assert checkpoint_id(tmp_path / "ckpt").startswith("ckpt@")


def test_missing_weights_are_named_not_randomly_initialised(tmp_path):
    path = save_policy(_small(), tmp_path / "ckpt")
    weights = load_file(path / WEIGHTS)
    del weights["action_out_proj.weight"]
    save_file(weights, path / WEIGHTS)
    with pytest.raises(CheckpointError, match="missing \\['action_out_proj.weight'\\]"):
        load_policy(path)


def test_config_that_disagrees_with_weights_is_refused(tmp_path):
    path = save_policy(_small(), tmp_path / "ckpt")
    config = json.loads((path / "config.json").read_text())
    config["width"] = 32
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="shape-mismatched"):
        load_policy(path)


def test_truncated_weights_file_is_reported(tmp_path):
    path = save_policy(_small(), tmp_path / "ckpt")
    data = (path / WEIGHTS).read_bytes()
    (path / WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors: unreadable"):
        load_policy(path)


def test_unknown_config_field_is_a_config_error(tmp_path):
    path = save_policy(_small(), tmp_path / "ckpt")
    config = json.loads((path / "config.json").read_text()) | {"widht": 3}
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="widht"):
        load_policy(path)


def test_failed_write_leaves_the_old_checkpoint(tmp_path):
    path = save_policy(_small(), tmp_path / "ckpt")
    before = checkpoint_id(path)
    with pytest.raises(RuntimeError):
        with atomic_directory(path) as tmp:
            (tmp / "config.json").write_text("{half")
            raise RuntimeError("crash mid-write")
    assert checkpoint_id(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary left behind


def test_checkpoint_id_streams_the_same_hash(tmp_path, monkeypatch):
    """Full-size weights are many GB: the id is hashed in chunks, never read whole, and stays the
    sha256 of each weight/config file's name and bytes in name order (provenance excluded)."""
    import hashlib
    from pathlib import Path

    path = save_policy(_small(), tmp_path / "ckpt", {"note": "x"})
    by_hand = hashlib.sha256()
    for name in ("config.json", "model.safetensors", "normalization.safetensors"):
        by_hand.update(name.encode() + (path / name).read_bytes())
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors",
                                                      "normalization.safetensors", "provenance.json"]

    def whole_file(self):
        raise AssertionError(f"{self} read whole")

    monkeypatch.setattr(Path, "read_bytes", whole_file)
    assert checkpoint_id(path) == f"ckpt@{by_hand.hexdigest()[:12]}"
