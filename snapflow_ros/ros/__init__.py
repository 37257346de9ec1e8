"""The thin ROS 2 layer: the only part of snapflow_ros that imports rclpy or message types."""
