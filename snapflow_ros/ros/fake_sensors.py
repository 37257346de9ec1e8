"""FakeJointStatePublisher: a stand-in robot for demos and tests, publishing stamped joint
states that move slowly (a sine per joint), so downstream chunks visibly change."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rclpy.node import Node
from sensor_msgs.msg import JointState

from snapflow_ros.ros.qos import SENSOR_QOS


class FakeJointStatePublisher(Node):
    def __init__(self, joint_names: Sequence[str], rate_hz: float = 50.0, **kwargs) -> None:
        super().__init__("fake_joint_states", **kwargs)
        self.joint_names = list(joint_names)
        self.publisher = self.create_publisher(JointState, "joint_states", SENSOR_QOS)
        self.create_timer(1.0 / rate_hz, self.publish_callback)
        self._start_ns = self.get_clock().now().nanoseconds

    def positions_at(self, t: float) -> list[float]:
        return [0.5 * math.sin(0.5 * t + i) for i in range(len(self.joint_names))]

    def publish_callback(self) -> None:
        now = self.get_clock().now()
        msg = JointState()
        msg.header.stamp = now.to_msg()
        msg.name = self.joint_names
        msg.position = self.positions_at((now.nanoseconds - self._start_ns) * 1e-9)
        self.publisher.publish(msg)
