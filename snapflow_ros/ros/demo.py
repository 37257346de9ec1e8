"""The bring-up demo: policy_node as its own process (as a launch file would start it), fed by a
fake robot, with every received chunk printed. Runs in an isolated DDS domain on localhost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
import yaml
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from snapflow_interfaces.msg import ActionChunk as ActionChunkMsg
from trajectory_msgs.msg import JointTrajectory

from snapflow_ros.ros.conversions import msg_to_chunk
from snapflow_ros.ros.fake_sensors import FakeJointStatePublisher
from snapflow_ros.ros.isolation import isolated_ros_env
from snapflow_ros.ros.qos import COMMAND_QOS
from snapflow_ros.ros.share import share_path


class ChunkPrinter(Node):
    """Prints each ActionChunk and counts the JointTrajectory messages beside them."""

    def __init__(self, **kwargs) -> None:
        super().__init__("chunk_printer", **kwargs)
        self.chunks: list[ActionChunkMsg] = []
        self.trajectories = 0
        self.create_subscription(ActionChunkMsg, "action_chunk", self.chunk_callback, COMMAND_QOS)
        self.create_subscription(
            JointTrajectory, "joint_trajectory", self.trajectory_callback, COMMAND_QOS
        )

    def chunk_callback(self, msg: ActionChunkMsg) -> None:
        self.chunks.append(msg)
        chunk = msg_to_chunk(msg)
        age_ms = (chunk.start_ns - chunk.observation_stamp_ns) * 1e-6
        first = np.array2string(chunk.actions[0], precision=3, suppress_small=True)
        print(
            f"chunk #{chunk.sequence:<3d} policy={chunk.policy_id} "
            f"{chunk.horizon}x{chunk.action_dim} dt={chunk.dt_s:g}s "
            f"obs_age={age_ms:6.1f}ms latency={chunk.inference_latency_s * 1e3:6.3f}ms "
            f"action[0]={first}",
            flush=True,
        )

    def trajectory_callback(self, msg: JointTrajectory) -> None:
        self.trajectories += 1


def run_demo(num_chunks: int = 10, timeout_s: float = 60.0, params_file: Path | None = None) -> int:
    """Returns 0 once `num_chunks` chunks arrived, 1 on timeout or a dead node."""
    params_file = params_file or share_path("config", "policy_node.yaml")
    joint_names = yaml.safe_load(params_file.read_text())["/**"]["ros__parameters"]["joint_names"]
    os.environ.update(isolated_ros_env())  # before rclpy.init, for this process and the child
    namespace = "/snapflow_demo"
    command = [
        sys.executable, "-m", "snapflow_ros.ros.policy_node",
        "--ros-args", "--params-file", str(params_file), "-r", f"__ns:={namespace}",
    ]
    print(f"demo: ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']} (localhost only)", flush=True)
    print(f"demo: starting {' '.join(command)}", flush=True)
    node_process = subprocess.Popen(command)
    rclpy.init()
    executor = SingleThreadedExecutor()
    robot = FakeJointStatePublisher(joint_names, namespace=namespace)
    printer = ChunkPrinter(namespace=namespace)
    executor.add_node(robot)
    executor.add_node(printer)
    deadline = time.monotonic() + timeout_s
    try:
        while len(printer.chunks) < num_chunks and time.monotonic() < deadline:
            if node_process.poll() is not None:
                print(f"demo: policy_node exited with code {node_process.returncode}", flush=True)
                return 1
            executor.spin_once(timeout_sec=0.1)
    finally:
        node_process.send_signal(signal.SIGINT)
        try:
            node_process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node_process.kill()
        executor.shutdown()
        robot.destroy_node()
        printer.destroy_node()
        rclpy.try_shutdown()
    received = len(printer.chunks)
    print(
        f"demo: received {received} ActionChunk and {printer.trajectories} JointTrajectory "
        f"messages from policy_node",
        flush=True,
    )
    return 0 if received >= num_chunks else 1
