"""BagRecorder: records topics into a ROS 2 bag (sqlite3 or MCAP) with rosbags, for machines
without rosbag2 (`ros2 bag record` does the same where ROS is installed).

Messages are written as the serialized bytes received (raw subscriptions: nothing re-encoded;
rclpy's serialize_message adds bytes rosbags rejects), stamped with the receive time as log time.
The bag appears at its path only when close() completes (temporary directory + rename).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from rclpy.node import Node
from rclpy.qos import QoSProfile

from snapflow_ros.bags.typestore import writing_typestore
from snapflow_ros.files import atomic_path


def type_name(message_type: type) -> str:
    """'sensor_msgs/msg/Image' for sensor_msgs.msg.Image."""
    package, kind = message_type.__module__.split(".")[:2]
    return f"{package}/{kind}/{message_type.__name__}"


class BagRecorder(Node):
    def __init__(self, topics: dict[str, tuple[type, QoSProfile]], output: Path, storage: str = "mcap",
                 clock: Callable[[], int] | None = None, **kwargs) -> None:
        """`clock` gives each message's log time in ns (default: this node's clock on receipt);
        a recording of a simulated clock passes that clock."""
        from rosbags.rosbag2 import StoragePlugin, Writer

        super().__init__("bag_recorder", **kwargs)
        self.output = Path(output)
        self.counts = dict.fromkeys(topics, 0)
        self._log_time = clock or (lambda: self.get_clock().now().nanoseconds)
        self._closed = False
        self._stack = ExitStack()
        staging = self._stack.enter_context(atomic_path(self.output))
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.writer = Writer(staging, version=9, storage_plugin=plugin)
        self.writer.open()
        store = writing_typestore()
        for topic, (message_type, qos) in topics.items():
            connection = self.writer.add_connection(self.resolve_topic_name(topic), type_name(message_type),
                                                    typestore=store)
            self.create_subscription(message_type, topic, self._writer_for(topic, connection), qos, raw=True)

    def _writer_for(self, topic: str, connection):
        def write(data: bytes) -> None:
            self.writer.write(connection, self._log_time(), data)
            self.counts[topic] += 1
        return write

    def close(self) -> Path:
        """Finishes the bag and moves it into place."""
        self.writer.close()
        self._stack.close()
        self._closed = True
        return self.output

    def destroy_node(self) -> None:
        if not self._closed:  # an unfinished recording is discarded, never left half-written
            self.writer.close()
            self._stack.__exit__(RuntimeError, RuntimeError("recording not closed"), None)
            self._closed = True
        super().destroy_node()
