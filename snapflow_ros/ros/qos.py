"""QoS profiles, one per role, so every publisher and subscription agrees."""

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from rclpy.qos_overriding_options import QoSOverridingOptions

# Sensors: best effort, keep the newest few; a late frame is worth less than a fresh one.
SENSOR_QOS: QoSProfile = qos_profile_sensor_data

# Commands (chunks, trajectories): reliable, since a controller must not silently miss one.
COMMAND_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

# Task instruction: latched, so a node started later still receives the current task.
LATCHED_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)

# Keyword arguments of create_publisher / create_subscription that let users set an entity's QoS
# the ROS way: qos_overrides.<topic>.<publisher|subscription>.<policy> parameters.
OVERRIDABLE = {"qos_overriding_options": QoSOverridingOptions.with_default_policies()}
