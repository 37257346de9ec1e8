"""An ActionChunk crosses Fast DDS between two nodes on localhost, in the test's own domain."""

import os

import pytest

pytestmark = pytest.mark.ros


def test_action_chunk_published_and_received(ros):
    from rclpy.node import Node
    from snapflow_interfaces.msg import ActionChunk as ActionChunkMsg

    from snapflow_ros.ros.qos import COMMAND_QOS

    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert 1 <= int(os.environ["ROS_DOMAIN_ID"]) <= 100
    sender = ros.node(Node, "chunk_sender")
    receiver = ros.node(Node, "chunk_receiver")
    received = []
    receiver.create_subscription(ActionChunkMsg, "chunks", received.append, COMMAND_QOS)
    publisher = sender.create_publisher(ActionChunkMsg, "chunks", COMMAND_QOS)

    msg = ActionChunkMsg(joint_names=["j1", "j2"], horizon=2, action_dim=2, policy_id="p1")
    msg.actions = [0.5, -1.0, 2.0, 3.25]
    assert ros.spin_until(lambda: publisher.get_subscription_count() > 0, timeout_s=10)
    publisher.publish(msg)
    assert ros.spin_until(lambda: received, timeout_s=10)
    got = received[0]
    assert list(got.joint_names) == ["j1", "j2"]
    assert list(got.actions) == [0.5, -1.0, 2.0, 3.25]
    assert got.policy_id == "p1"
