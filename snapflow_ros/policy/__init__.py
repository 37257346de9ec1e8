"""Policy-side types shared by the node, the runtime, training and evaluation (no ROS)."""

from snapflow_ros.policy.chunk import ActionChunk
from snapflow_ros.policy.hold import HoldPositionPolicy
from snapflow_ros.policy.observation import Observation

__all__ = ["ActionChunk", "HoldPositionPolicy", "Observation"]
