"""Loading what the node serves: torch checkpoints and ONNX exports, warmed up and checked; a
broken source fails with a named error and the slot keeps its policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import save_small_student
from snapflow_ros.errors import CheckpointError, ConfigError
from snapflow_ros.export.onnx_export import export_policy
from snapflow_ros.policy.observation import Observation
from snapflow_ros.runtime.serving import PolicySlot, load_served_policy


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    return save_small_student(tmp_path_factory.mktemp("serve") / "student")


def _observation() -> Observation:
    image = np.random.default_rng(1).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    return Observation(state=np.array([0.1, 0.2, 0.3, 0.4]), stamp_ns=1, images={"front": image},
                       instruction="reach the green target")


def test_torch_and_onnxruntime_serve_the_same_actions(student, tmp_path):
    served_torch = load_served_policy(student, "torch")
    assert served_torch.steps == 1 and served_torch.cameras == ("front",)
    assert served_torch.policy_id.startswith("student@") and served_torch.warmup_ms > 0
    export_policy(student, tmp_path / "onnx")
    served_ort = load_served_policy(tmp_path / "onnx", "onnxruntime")
    assert served_ort.steps == 1
    a, b = served_torch.predict(_observation(), seed=3), served_ort.predict(_observation(), seed=3)
    assert a.shape == (8, 2)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_bad_sources_fail_with_named_errors(student, tmp_path):
    with pytest.raises(ConfigError, match="backend 'tensorrt' unknown"):
        load_served_policy(student, "tensorrt")
    with pytest.raises(CheckpointError, match="needs an export directory"):
        load_served_policy(student, "onnxruntime")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="invalid JSON"):
        load_served_policy(tmp_path / "corrupt", "torch")


def test_slot_swaps_whole_policies(student):
    first, second = load_served_policy(student), load_served_policy(student, steps=4)
    slot = PolicySlot(first)
    assert slot.swap(second) is first
    assert slot.policy is second and slot.policy.steps == 4
