"""snapflow_ros: one-step flow-matching robot policies for ROS 2.

The core (policy/, cli/, and the `snapflow_distill` package) imports without rclpy; only
snapflow_ros.ros talks to ROS.
"""

__version__ = "0.1.0"
