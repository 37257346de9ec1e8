"""Demonstrations through ROS: sim_robot in expert mode publishes its topics, BagRecorder records
them, exactly as `ros2 bag record` would on a real robot.

By default the robot is stepped: each control period of simulated time it publishes, and the
next step waits until the recorder has every message, all stamped on the simulated clock. The
bag is then the same for a seed on any machine, at whatever speed the machine allows. With
real_time=True the robot runs on its own timer against the wall clock, as on a robot."""

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

from snapflow_ros.errors import SnapflowError
from snapflow_ros.ros.bag_recorder import BagRecorder
from snapflow_ros.ros.qos import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS
from snapflow_ros.ros.sim_robot import SimRobotNode
from snapflow_ros.sim.topics import (
    CAMERA_TOPIC,
    EPISODE_START_TOPIC,
    EXPERT_COMMAND_TOPIC,
    INSTRUCTION_TOPIC,
    JOINT_STATE_TOPIC,
    root_name,
)

RECORDED_TOPICS = {
    root_name(CAMERA_TOPIC): (Image, SENSOR_QOS),
    root_name(JOINT_STATE_TOPIC): (JointState, SENSOR_QOS),
    root_name(EXPERT_COMMAND_TOPIC): (JointTrajectory, COMMAND_QOS),
    root_name(INSTRUCTION_TOPIC): (String, LATCHED_QOS),
    root_name(EPISODE_START_TOPIC): (String, LATCHED_QOS),
}


class SimulatedClock:
    """The recorder's log time: the stepped robot's simulated clock (set once the robot exists)."""

    def __init__(self) -> None:
        self.source: Callable[[], int] = lambda: 0

    def __call__(self) -> int:
        return self.source()


def _spin_until(executor: SingleThreadedExecutor, condition: Callable[[], bool], what: str,
                timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SnapflowError(f"recording: gave up after {timeout_s:.0f} s waiting for {what}")
        executor.spin_once(timeout_sec=0.05)


def _wait_for_recorder(executor: SingleThreadedExecutor, recorder: BagRecorder, robot: SimRobotNode) -> None:
    """Until the recorder holds every message the robot sent: a step never overtakes them."""
    _spin_until(executor, lambda: sum(recorder.counts.values()) >= robot.messages_sent,
                f"the recorder to get all {robot.messages_sent} messages sim_robot sent (one was lost)")


def record_demos(task: str, episodes: int, output: Path, seed: int = 0, image_size: int = 32,
                 rate_hz: float = 20.0, progress: Callable[[int, int], None] | None = None,
                 task_file: Path | None = None, real_time: bool = False) -> tuple[Path, dict]:
    """Records `episodes` expert episodes of `task` (built-in, or defined in `task_file`) into the
    bag `output`; returns it and the successes/failures of the episodes."""
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    recorder = robot = None
    try:
        clock = SimulatedClock()
        recorder = BagRecorder(RECORDED_TOPICS, output, context=context, clock=None if real_time else clock)
        executor.add_node(recorder)
        executor.spin_once(timeout_sec=0.1)  # subscriptions up before the first episode starts
        robot = SimRobotNode(context=context, parameter_overrides=[
            Parameter("stepped", value=not real_time),
            Parameter("task", value=task), Parameter("task_file", value=str(task_file or "")),
            Parameter("mode", value="expert"), Parameter("seed", value=seed),
            Parameter("episodes", value=episodes), Parameter("image_size", value=image_size),
            Parameter("control_rate_hz", value=rate_hz)])
        executor.add_node(robot)
        clock.source = robot.now_ns
        robot.get_logger().set_level(LoggingSeverity.WARN)  # progress() reports the episodes
        if not real_time:
            _spin_until(executor, lambda: all(p.get_subscription_count() > 0 for p in robot.recorded_publishers()),
                        "the recorder's subscriptions to match sim_robot's publishers")
        reported = 0
        while len(robot.results) < episodes:
            if real_time:
                executor.spin_once(timeout_sec=0.1)
            else:
                _wait_for_recorder(executor, recorder, robot)
                robot.step_once()
            if progress and len(robot.results) > reported:
                reported = len(robot.results)
                progress(reported, episodes)
        if real_time:
            deadline = time.monotonic() + 0.5  # the last messages in flight
            while time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.05)
        else:
            _wait_for_recorder(executor, recorder, robot)
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
