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


def test_missing_joint_names_leaves_the_node_unconfigured_with_the_reason(ros):
    from snapflow_ros.ros.policy_node import PolicyNode

    node = ros.node(PolicyNode)
    assert node.lifecycle_state == "unconfigured" and "parameter 'joint_names' is required" in node.configure_error


def test_missing_checkpoint_is_refused_at_configure(ros, tmp_path):
    node = _policy_node(ros, checkpoint=str(tmp_path))
    assert node.lifecycle_state == "unconfigured" and "config.json missing" in node.configure_error
    assert node.slot.policy is None


def test_qos_is_configurable_through_standard_overrides(ros):
    from rclpy.qos import ReliabilityPolicy

    node = _policy_node(ros, **{"qos_overrides./joint_states.subscription.reliability": "reliable",
                               "qos_overrides./action_chunk.publisher.depth": 3})
    subscription = next(s for s in node.subscriptions if s.topic_name == "/joint_states")
    assert subscription.qos_profile.reliability == ReliabilityPolicy.RELIABLE  # default is best effort
    assert node.chunk_publisher.qos_profile.depth == 3


def _lifecycle(ros, probe, node_name: str = "/policy_node"):
    """change_state / get_state through the node's lifecycle services, as `ros2 lifecycle` calls them."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    change = probe.node.create_client(ChangeState, f"{node_name}/change_state")
    get = probe.node.create_client(GetState, f"{node_name}/get_state")
    assert ros.spin_until(lambda: change.service_is_ready() and get.service_is_ready())

    def call(client, request):
        future = client.call_async(request)
        assert ros.spin_until(future.done, 30.0)
        return future.result()

    def transition(label: str) -> bool:
        return call(change, ChangeState.Request(transition=Transition(label=label))).success

    def state() -> str:
        return call(get, GetState.Request()).current_state.label

    return transition, state


def test_lifecycle_configure_activate_deactivate_over_the_services(ros):
    node = _policy_node(ros, autostart=False, chunk_rate_hz=10.0)
    probe = _Probe(ros)
    transition, state = _lifecycle(ros, probe)
    assert state() == "unconfigured" and node.slot.policy is None
    assert transition("configure") and state() == "inactive"
    assert node.slot.policy.policy_id == "builtin:hold-position"  # loaded, warmed up, checked
    assert not _feed_until(ros, probe, JOINTS, [0.1, 0.2, 0.3], lambda: probe.chunks, timeout_s=0.5)
    assert transition("activate") and state() == "active"
    assert _feed_until(ros, probe, JOINTS, [0.1, 0.2, 0.3], lambda: len(probe.chunks) >= 2)
    assert transition("deactivate") and state() == "inactive"
    ros.spin_for(0.15)  # a chunk already on the wire may still arrive
    published = len(probe.chunks)
    # deactivated: nothing within several periods (0.1 s) although the inputs are valid
    assert not _feed_until(ros, probe, JOINTS, [0.1, 0.2, 0.3], lambda: len(probe.chunks) > published, timeout_s=0.5)
    assert transition("activate") and _feed_until(ros, probe, JOINTS, [0.1, 0.2, 0.3],
                                                  lambda: len(probe.chunks) > published)
    assert transition("deactivate") and transition("cleanup") and state() == "unconfigured"
    assert node.slot.policy is None  # released


def test_configure_with_a_corrupt_checkpoint_stays_unconfigured_and_says_why(ros, tmp_path):
    from conftest import save_small_student

    student = save_small_student(tmp_path / "student", state_dim=3, action_dim=3, chunk_size=5, width=32,
                                 num_heads=4, num_layers=1, joint_names=tuple(JOINTS))
    (student / "model.safetensors").write_bytes(b"not a tensor file")
    node = _policy_node(ros, autostart=False, checkpoint=str(student))
    probe = _Probe(ros)
    transition, state = _lifecycle(ros, probe)
    assert not transition("configure") and state() == "unconfigured"
    assert "model.safetensors: unreadable" in node.configure_error and node.slot.policy is None
    assert not _feed_until(ros, probe, JOINTS, [0.1, 0.2, 0.3], lambda: probe.chunks, timeout_s=0.3)


def test_a_destroyed_node_leaves_nothing_in_the_graph(ros):
    """rclpy's LifecycleNode leaves its state machine (and with it the rcl node and its
    transition_event publisher) to the garbage collector; a later node of the same name then met
    a ghost in the graph (CI, test_sros2_policy). destroy_node must remove it at once."""
    import gc

    from rclpy.node import Node

    node = _policy_node(ros)
    probe = ros.node(Node, "probe")
    assert ros.spin_until(lambda: "policy_node" in probe.get_node_names())
    gc.disable()  # a collection in between would hide the ghost
    try:
        ros.executor.remove_node(node)
        ros.nodes.remove(node)
        node.destroy_node()
        assert ros.spin_until(lambda: "policy_node" not in probe.get_node_names(), timeout_s=3.0), \
            probe.get_node_names()
    finally:
        gc.enable()
