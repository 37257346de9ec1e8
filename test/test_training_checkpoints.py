"""Periodic training checkpoints: only the trained tensors of a distillation (no frozen backbone),
no pickle, the newest keep_checkpoints kept, strict restore into the live policy, and refusal of
another teacher or another configuration."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import tiny_synthetic_policy
from snapflow_distill.synthetic import make_dataset
from snapflow_distill.trainer import POLICY_TENSORS, STATE, TrainConfig, Trainer
from snapflow_ros.errors import CheckpointError, ConfigError

TEACHER = {"teacher": "/runs/teacher/policy", "teacher_id": "policy@0123456789ab"}


@pytest.fixture(scope="module")
def data():
    return make_dataset(32, seed=3)[0]


def _trainer(data, out, provenance=TEACHER, **config) -> Trainer:
    config = TrainConfig(**{"objective": "snapflow", "steps": 4, "batch_size": 4, "warmup_steps": 1,
                            "checkpoint_every": 1, **config})
    trainer = Trainer(tiny_synthetic_policy(data), data, config, out)
    trainer.provenance |= provenance
    return trainer


def _steps(out) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").iterdir())


def test_distillation_checkpoint_holds_trained_tensors_only(data, tmp_path):
    trainer = _trainer(data, tmp_path, ema_decay=0.5)
    trainer.run()
    # Checkpoints at steps 1-3 (4 is the final policy); the default keeps the newest two.
    assert _steps(tmp_path) == ["step-00000002", "step-00000003"]
    latest = tmp_path / "checkpoints" / "step-00000003"
    assert {p.name for p in latest.iterdir()} == {POLICY_TENSORS, "training_state.safetensors", STATE}
    trained = {n for n, p in trainer.policy.named_parameters() if p.requires_grad}
    assert "patch_embed.weight" not in trained  # the frozen backbone stays out
    assert set(load_file(latest / POLICY_TENSORS)) == trained
    state = json.loads((latest / STATE).read_text())
    assert state["step"] == 3 and {k: state[k] for k in TEACHER} == TEACHER
    kinds = {k.split("/")[0] for k in load_file(latest / "training_state.safetensors")}
    assert kinds == {"optimizer", "ema", "rng"}


def test_teacher_from_scratch_checkpoint_holds_the_whole_state(data, tmp_path):
    """Nothing to come back from: phi's random first layer and the normalisation are kept too."""
    trainer = _trainer(data, tmp_path, provenance={}, objective="flow_matching", keep_checkpoints=0)
    trainer.run()
    assert _steps(tmp_path) == ["step-00000001", "step-00000002", "step-00000003"]  # 0: keep all
    saved = load_file(tmp_path / "checkpoints" / "step-00000003" / POLICY_TENSORS)
    assert set(saved) == set(trainer.policy.state_dict())


def test_resume_refuses_another_teacher_and_accepts_a_moved_one(data, tmp_path):
    _trainer(data, tmp_path, steps=2).run()
    other = {"teacher": "/runs/other/policy", "teacher_id": "policy@ba9876543210"}
    with pytest.raises(ConfigError, match=r"policy@0123456789ab.*policy@ba9876543210"):
        _trainer(data, tmp_path, other, steps=2).resume()
    with pytest.raises(ConfigError, match=r"policy@0123456789ab.*None"):
        _trainer(data, tmp_path, {}, steps=2).resume()
    moved = {"teacher": "/elsewhere/teacher", "teacher_id": "teacher@0123456789ab"}
    assert _trainer(data, tmp_path, moved, steps=2).resume()


def test_resume_refuses_a_changed_configuration_but_not_how_it_runs(data, tmp_path):
    _trainer(data, tmp_path, steps=2).run()
    with pytest.raises(ConfigError, match=r"changed: \['learning_rate'\]"):
        _trainer(data, tmp_path, steps=2, learning_rate=5e-4).resume()
    trainer = _trainer(data, tmp_path, steps=2, keep_checkpoints=5, workers=1)
    assert trainer.resume() and trainer.step == 1


def test_resume_loads_strictly_into_the_live_policy(data, tmp_path):
    _trainer(data, tmp_path, steps=2).run()
    path = tmp_path / "checkpoints" / "step-00000001" / POLICY_TENSORS
    trainer = _trainer(data, tmp_path, steps=2)
    saved = load_file(path)
    assert not torch.equal(trainer.policy.action_out_proj.weight, saved["action_out_proj.weight"])
    assert trainer.resume()
    assert torch.equal(trainer.policy.action_out_proj.weight, saved["action_out_proj.weight"])

    saved["action_out_proj.weight"] = saved["action_out_proj.weight"][:1]
    del saved["action_in_proj.bias"]
    save_file(saved | {"patch_embed.weight": torch.zeros(1)}, path)
    named = (r"missing \['action_in_proj.bias'\], unexpected \['patch_embed.weight'\], "
             r"shape-mismatched \['action_out_proj.weight \(1, 16\) vs \(2, 16\)'\]")
    with pytest.raises(CheckpointError, match=named):
        _trainer(data, tmp_path, steps=2).resume()
