"""Demonstrations through ROS: sim_robot in expert mode publishes its topics, BagRecorder records
them, exactly as `ros2 bag record` would on a real robot."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.logging import LoggingSeverity
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from snapflow_ros.ros.bag_recorder import BagRecorder
from snapflow_ros.ros.qos import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS
from snapflow_ros.ros.sim_robot import SimRobotNode

RECORDED_TOPICS = {
    "/camera/top/image_raw": (Image, SENSOR_QOS),
    "/joint_states": (JointState, SENSOR_QOS),
    "/joint_commands": (JointTrajectory, COMMAND_QOS),
    "/instruction": (String, LATCHED_QOS),
    "/episode_start": (String, LATCHED_QOS),
}


def record_demos(task: str, episodes: int, output: Path, seed: int = 0, image_size: int = 32,
                 rate_hz: float = 20.0, progress: Callable[[int, int], None] | None = None,
                 task_file: Path | None = None) -> tuple[Path, dict]:
    """Records `episodes` expert episodes of `task` (built-in, or defined in `task_file`) into the
    bag `output`; returns it and the successes/failures of the episodes."""
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    recorder = robot = None
    try:
        recorder = BagRecorder(RECORDED_TOPICS, output, context=context)
        executor.add_node(recorder)
        executor.spin_once(timeout_sec=0.1)  # subscriptions up before the first episode starts
        robot = SimRobotNode(context=context, parameter_overrides=[
            Parameter("task", value=task), Parameter("task_file", value=str(task_file or "")),
            Parameter("mode", value="expert"), Parameter("seed", value=seed),
            Parameter("episodes", value=episodes), Parameter("image_size", value=image_size),
            Parameter("control_rate_hz", value=rate_hz)])
        executor.add_node(robot)
        robot.get_logger().set_level(LoggingSeverity.WARN)  # progress() reports the episodes
        reported = 0
        while len(robot.results) < episodes:
            executor.spin_once(timeout_sec=0.1)
            if progress and len(robot.results) > reported:
                reported = len(robot.results)
                progress(reported, episodes)
        deadline = time.monotonic() + 0.5  # the last messages in flight
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        path = recorder.close()
        outcomes = {"episodes": episodes, "successes": sum(r.success for r in robot.results),
                    "messages": dict(recorder.counts)}
        return path, outcomes
    finally:
        executor.shutdown()
        for node in (robot, recorder):
            if node is not None:
                node.destroy_node()
        context.try_shutdown()
