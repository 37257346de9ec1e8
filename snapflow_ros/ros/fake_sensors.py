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
        self.inject_nan = False  # tests: publish a NaN position

    def positions_at(self, t: float) -> list[float]:
        return [0.5 * math.sin(0.5 * t + i) for i in range(len(self.joint_names))]

    def publish_callback(self) -> None:
        now = self.get_clock().now()
        msg = JointState()
        msg.header.stamp = now.to_msg()
        msg.name = self.joint_names
        msg.position = self.positions_at((now.nanoseconds - self._start_ns) * 1e-9)
        if self.inject_nan:
            msg.position[0] = math.nan
        self.publisher.publish(msg)


class FakeCameraPublisher(Node):
    """Publishes a moving test pattern on `topic` as sensor_msgs/Image (rgb8/bgr8/mono8) or
    sensor_msgs/CompressedImage (jpeg/png), stamped now, at `rate_hz`."""

    def __init__(self, topic: str, image_format: str = "rgb8", rate_hz: float = 30.0, size: int = 32,
                 **kwargs) -> None:
        import numpy as np
        from sensor_msgs.msg import CompressedImage, Image

        super().__init__(f"fake_camera_{topic.strip('/').replace('/', '_')}", **kwargs)
        self.image_format, self.size, self.np = image_format, size, np
        self.compressed = image_format in ("jpeg", "png")
        self.message_type = CompressedImage if self.compressed else Image
        self.publisher = self.create_publisher(self.message_type, topic, SENSOR_QOS)
        self.stamp_offset_ns = 0  # tests shift stamps into the past to make frames stale
        self.frames = 0
        self.create_timer(1.0 / rate_hz, self.publish_callback)

    def publish_callback(self) -> None:
        from snapflow_ros.sensors.images import encode_compressed, encode_raw

        np = self.np
        self.frames += 1
        rgb = np.zeros((self.size, self.size, 3), dtype=np.uint8)
        rgb[:, : (self.frames % self.size) + 1, 1] = 200
        msg = self.message_type()
        now = self.get_clock().now().nanoseconds - self.stamp_offset_ns
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
        if self.compressed:
            msg.format = self.image_format
            msg.data = encode_compressed(rgb, self.image_format)
        else:
            msg.height, msg.width, msg.step, data = encode_raw(rgb, self.image_format)
            msg.encoding = self.image_format
            msg.data = data
        self.publisher.publish(msg)
