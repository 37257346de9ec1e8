"""snapflow_interfaces: generated types import, carry the fields the node and the distillation
service rely on, and convert to and from the core's ActionChunk without loss."""

import numpy as np
import pytest

from snapflow_ros.errors import InputError
from snapflow_ros.policy import ActionChunk


def test_generated_types_import_with_expected_fields():
    from snapflow_interfaces.action import Distill
    from snapflow_interfaces.msg import ActionChunk as ActionChunkMsg
    from snapflow_interfaces.msg import DistillationJob, DistillationStatus
    from snapflow_interfaces.srv import CancelDistillation, GetDistillationStatus, StartDistillation

    chunk_fields = set(ActionChunkMsg.get_fields_and_field_types())
    assert {
        "header", "joint_names", "horizon", "action_dim", "actions", "dt", "policy_id",
        "observation_stamp", "inference_latency",
    } <= chunk_fields
    assert ActionChunkMsg.get_fields_and_field_types()["actions"] == "sequence<float>"
    assert {"job_id", "state", "step", "total_steps", "loss", "eta_seconds", "message"} <= set(
        DistillationStatus.get_fields_and_field_types()
    )
    assert DistillationStatus.FAILED != DistillationStatus.SUCCEEDED
    assert {"bag_paths", "teacher_checkpoint", "output_dir", "steps"} <= set(
        DistillationJob.get_fields_and_field_types()
    )
    assert "job" in StartDistillation.Request.get_fields_and_field_types()
    assert "job_id" in StartDistillation.Response.get_fields_and_field_types()
    assert "job_id" in CancelDistillation.Request.get_fields_and_field_types()
    assert "status" in GetDistillationStatus.Response.get_fields_and_field_types()
    assert "status" in Distill.Feedback.get_fields_and_field_types()
    assert "student_checkpoint" in Distill.Result.get_fields_and_field_types()


def _chunk(**overrides) -> ActionChunk:
    values = dict(
        actions=np.arange(12, dtype=np.float32).reshape(4, 3) / 7,
        joint_names=("a", "b", "c"),
        dt_s=0.05,
        policy_id="test-policy",
        denoising_steps=1,
        observation_stamp_ns=1_700_000_000_123_456_789,
        start_ns=1_700_000_000_200_000_000,
        inference_latency_s=0.0123,
        sequence=42,
    )
    values.update(overrides)
    return ActionChunk(**values)


def test_chunk_message_round_trip():
    from snapflow_ros.ros.conversions import chunk_to_msg, msg_to_chunk

    chunk = _chunk()
    msg = chunk_to_msg(chunk)
    assert (msg.horizon, msg.action_dim) == (4, 3)
    assert msg.observation_stamp.sec == 1_700_000_000 and msg.observation_stamp.nanosec == 123_456_789
    back = msg_to_chunk(msg)
    np.testing.assert_array_equal(back.actions, chunk.actions)
    assert back.joint_names == chunk.joint_names
    assert back.observation_stamp_ns == chunk.observation_stamp_ns
    assert back.start_ns == chunk.start_ns
    assert back.sequence == 42 and back.policy_id == "test-policy"
    assert back.dt_s == pytest.approx(0.05) and back.inference_latency_s == pytest.approx(0.0123)


def test_trajectory_points_are_spaced_by_dt():
    from snapflow_ros.ros.conversions import chunk_to_trajectory, duration_to_seconds, time_to_ns

    chunk = _chunk()
    trajectory = chunk_to_trajectory(chunk)
    assert trajectory.joint_names == ["a", "b", "c"]
    assert time_to_ns(trajectory.header.stamp) == chunk.start_ns
    assert [duration_to_seconds(p.time_from_start) for p in trajectory.points] == pytest.approx(
        [0.0, 0.05, 0.10, 0.15]
    )
    np.testing.assert_allclose([p.positions for p in trajectory.points], chunk.actions, rtol=1e-6)


def test_message_with_inconsistent_sizes_is_rejected():
    from snapflow_ros.ros.conversions import chunk_to_msg, msg_to_chunk

    msg = chunk_to_msg(_chunk())
    msg.horizon = 5
    with pytest.raises(InputError, match="horizon\\*action_dim"):
        msg_to_chunk(msg)


def test_chunk_rejects_nan_and_mismatched_names():
    with pytest.raises(InputError, match="NaN"):
        _chunk(actions=np.full((2, 3), np.nan, dtype=np.float32))
    with pytest.raises(InputError, match="joint_names"):
        _chunk(joint_names=("a", "b"))
