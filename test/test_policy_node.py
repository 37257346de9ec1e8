"""policy_node over real rclpy: fresh joint states in -> ActionChunk + JointTrajectory out;
stale, NaN or incomplete joint states -> nothing published."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytestmark = pytest.mark.ros

JOINTS = ["shoulder", "elbow", "wrist"]


def _policy_node(ros, **params):
    from rclpy.parameter import Parameter

    from snapflow_ros.ros.policy_node import PolicyNode

    values = {"joint_names": JOINTS, "chunk_rate_hz": 20.0, "action_horizon": 5, "action_dt": 0.04,
              "drop_stale_actions": False, "instruction": "hold still"}
    values.update(params)
    overrides = [Parameter(name, value=value) for name, value in values.items()]
    return ros.node(PolicyNode, parameter_overrides=overrides)


class _Probe:
    """Publishes joint states the test controls and records what the policy node publishes."""

    def __init__(self, ros) -> None:
        from rclpy.node import Node
        from sensor_msgs.msg import JointState
        from snapflow_interfaces.msg import ActionChunk as ActionChunkMsg
        from trajectory_msgs.msg import JointTrajectory

        from snapflow_ros.ros.qos import COMMAND_QOS, SENSOR_QOS

        self.node = ros.node(Node, "probe")
        self.JointState = JointState
        self.joint_states = self.node.create_publisher(JointState, "joint_states", SENSOR_QOS)
        self.chunks: list = []
        self.trajectories: list = []
        self.node.create_subscription(ActionChunkMsg, "action_chunk", self.chunks.append, COMMAND_QOS)
        self.node.create_subscription(
            JointTrajectory, "joint_trajectory", self.trajectories.append, COMMAND_QOS
        )

    def publish(self, names, positions, age_s: float = 0.0) -> None:
        msg = self.JointState()
        now_ns = self.node.get_clock().now().nanoseconds - int(age_s * 1e9)
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now_ns, 1_000_000_000)
        msg.name = list(names)
        msg.position = [float(p) for p in positions]
        self.joint_states.publish(msg)


def _feed_until(ros, probe, names, positions, condition, age_s=0.0, timeout_s=5.0) -> bool:
    def step():
        probe.publish(names, positions, age_s)
        return condition()

    return ros.spin_until(step, timeout_s=timeout_s)


def test_chunks_follow_joint_states_by_name(ros):
    from snapflow_ros.ros.conversions import duration_to_seconds, msg_to_chunk, time_to_ns

    node = _policy_node(ros)
    probe = _Probe(ros)
    # Published in a different order than the policy's: the node must map by name.
    names = ["wrist", "shoulder", "elbow", "unused"]
    positions = [0.3, 0.1, 0.2, 9.0]
    assert _feed_until(ros, probe, names, positions, lambda: len(probe.chunks) >= 2 and probe.trajectories)

    chunk = msg_to_chunk(probe.chunks[-1])
    assert chunk.joint_names == tuple(JOINTS)
    assert chunk.actions.shape == (5, 3)
    np.testing.assert_allclose(chunk.actions, np.tile([0.1, 0.2, 0.3], (5, 1)), rtol=1e-6)
    assert chunk.policy_id == node.slot.policy.policy_id == "builtin:hold-position"
    assert chunk.dt_s == pytest.approx(0.04)
    assert chunk.start_ns >= chunk.observation_stamp_ns
    assert probe.chunks[-1].sequence > probe.chunks[0].sequence

    trajectory = probe.trajectories[-1]
    assert list(trajectory.joint_names) == JOINTS
    assert len(trajectory.points) == 5
    assert duration_to_seconds(trajectory.points[4].time_from_start) == pytest.approx(0.16)
    assert time_to_ns(trajectory.header.stamp) > 0


@pytest.mark.parametrize(
    "names, positions, age_s, reason",
    [
        (JOINTS, [0.1, 0.2, 0.3], 2.0, "stale"),
        (JOINTS, [0.1, math.nan, 0.3], 0.0, "non-finite"),
        (JOINTS[:2], [0.1, 0.2], 0.0, "missing"),
    ],
    ids=["stale", "nan", "missing-joint"],
)
def test_invalid_joint_states_publish_nothing(ros, names, positions, age_s, reason):
    node = _policy_node(ros, max_input_age=0.5)
    probe = _Probe(ros)
    # Until the node has seen the bad input (discovery can take a while under load) ...
    assert _feed_until(ros, probe, names, positions, lambda: reason in node.hold_reason, age_s=age_s,
                       timeout_s=10.0)
    # ... and then for several chunk periods at 20 Hz: nothing is published.
    assert not _feed_until(ros, probe, names, positions, lambda: probe.chunks, age_s=age_s, timeout_s=1.0)
    assert reason in node.hold_reason
    assert not probe.chunks and not probe.trajectories


def test_publishing_resumes_when_inputs_become_valid(ros):
    node = _policy_node(ros)
    probe = _Probe(ros)
    assert not _feed_until(ros, probe, JOINTS, [0.1, math.nan, 0.3], lambda: probe.chunks, timeout_s=0.5)
    assert _feed_until(ros, probe, JOINTS, [0.1, 0.2, 0.3], lambda: probe.chunks)
    assert node.hold_reason == ""


def test_missing_joint_names_is_a_config_error(ros):
    from snapflow_ros.errors import ConfigError
    from snapflow_ros.ros.policy_node import PolicyNode

    with pytest.raises(ConfigError, match="joint_names"):
        PolicyNode(context=ros.context)


def test_missing_checkpoint_is_refused_at_start(ros, tmp_path):
    from snapflow_ros.errors import CheckpointError

    with pytest.raises(CheckpointError, match="config.json missing"):
        _policy_node(ros, checkpoint=str(tmp_path))


def test_qos_is_configurable_through_standard_overrides(ros):
    from rclpy.qos import ReliabilityPolicy

    node = _policy_node(ros, **{"qos_overrides./joint_states.subscription.reliability": "reliable",
                               "qos_overrides./action_chunk.publisher.depth": 3})
    subscription = next(s for s in node.subscriptions if s.topic_name == "/joint_states")
    assert subscription.qos_profile.reliability == ReliabilityPolicy.RELIABLE  # default is best effort
    assert node.chunk_publisher.qos_profile.depth == 3
