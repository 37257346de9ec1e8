"""Sensor inputs as plain arrays: image decoding and stamp-based observation assembly (no ROS)."""
