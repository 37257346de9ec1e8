"""Realistic demonstration bags written with rosbags (tests, benchmarks, trying the pipeline).

A planar hand (joints hand_x, hand_y, plus an idle gripper) reaches a goal around an obstacle,
passing it on a random side (the synthetic task's two-route expert). Recorded like a real robot:
joint states at 50 Hz from a first-order servo, a camera at 15 Hz (raw rgb8 or JPEG), position
commands at the control rate, the instruction and an episode marker at each episode start,
header stamps at sensing time and log times a few milliseconds later, idle gaps between episodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from snapflow_ros.bags.config import BagDatasetConfig
from snapflow_ros.bags.typestore import writing_typestore
from snapflow_ros.data.synthetic_reach import INSTRUCTION, expert_routes, render
from snapflow_ros.errors import ConfigError
from snapflow_ros.files import atomic_path
from snapflow_ros.sensors.images import encode_compressed, encode_raw

COMMAND_TYPES = {
    "JointTrajectory": "trajectory_msgs/msg/JointTrajectory",
    "JointState": "sensor_msgs/msg/JointState",
    "Float64MultiArray": "std_msgs/msg/Float64MultiArray",
    "ActionChunk": "snapflow_interfaces/msg/ActionChunk",
}
JOINTS = ("hand_x", "hand_y")
RECORDED_JOINTS = ("gripper", "hand_y", "hand_x")  # a robot's own order, with a joint the policy ignores


@dataclass(frozen=True)
class DemoBagSpec:
    episodes: int = 4               # episodes per bag
    storage: str = "sqlite3"        # sqlite3 or mcap
    image_format: str = "raw"       # raw (sensor_msgs/Image rgb8) or compressed (CompressedImage jpeg)
    image_size: int = 32            # camera image side in pixels
    camera_hz: float = 15.0
    joint_state_hz: float = 50.0
    command_hz: float = 10.0        # the control rate: one position command per tick
    command_type: str = "JointTrajectory"  # one of COMMAND_TYPES
    reach_ticks: int = 12           # commands along the route; then the hand holds at the goal
    hold_ticks: int = 6
    gap_s: float = 2.0              # idle time between episodes (nothing recorded)
    servo_tau_s: float = 0.05       # time constant of the hand following its command
    seed: int = 0

    def __post_init__(self) -> None:
        if self.storage not in ("sqlite3", "mcap"):
            raise ConfigError(f"storage must be sqlite3 or mcap, got {self.storage!r}")
        if self.image_format not in ("raw", "compressed"):
            raise ConfigError(f"image_format must be raw or compressed, got {self.image_format!r}")
        if self.command_type not in COMMAND_TYPES:
            raise ConfigError(f"command_type must be one of {list(COMMAND_TYPES)}, got {self.command_type!r}")

    @property
    def camera_topic(self) -> str:
        return "/camera/front/" + ("compressed" if self.image_format == "compressed" else "image_raw")

    def dataset_config(self, **overrides) -> BagDatasetConfig:
        """The BagDatasetConfig that reads these bags."""
        values = dict(cameras={"front": self.camera_topic}, joint_names=JOINTS, instruction_topic="/instruction",
                      action_topic="/joint_commands", rate_hz=self.command_hz, episode_split="gap",
                      episode_gap=self.gap_s / 2)
        return BagDatasetConfig(**(values | overrides))


def write_demo_bag(path: Path, spec: DemoBagSpec = DemoBagSpec()) -> Path:
    """Writes one bag directory at `path` (atomically: complete or absent). Returns the path."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = writing_typestore()
    T = store.types
    rng = np.random.default_rng(spec.seed)
    plugin = StoragePlugin.MCAP if spec.storage == "mcap" else StoragePlugin.SQLITE3
    path = Path(path)
    with atomic_path(path) as staging:
        with Writer(staging, version=9, storage_plugin=plugin) as writer:
            image_type = ("sensor_msgs/msg/CompressedImage" if spec.image_format == "compressed"
                          else "sensor_msgs/msg/Image")
            connections = {
                "camera": writer.add_connection(spec.camera_topic, image_type, typestore=store),
                "joints": writer.add_connection("/joint_states", "sensor_msgs/msg/JointState", typestore=store),
                "command": writer.add_connection("/joint_commands", COMMAND_TYPES[spec.command_type], typestore=store),
                "instruction": writer.add_connection("/instruction", "std_msgs/msg/String", typestore=store),
                "episode": writer.add_connection("/episode_start", "std_msgs/msg/String", typestore=store),
            }
            messages: list[tuple[int, str, object, str]] = []  # (log time, connection, msg, type)

            def header(stamp_ns: int):
                return T["std_msgs/msg/Header"](
                    stamp=T["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9),
                    frame_id="")

            def emit(kind: str, stamp_ns: int, msg, msgtype: str) -> None:
                latency = int(rng.integers(1_000_000, 4_000_000))  # transport: 1-4 ms after sensing
                messages.append((stamp_ns + latency, kind, msg, msgtype))

            t0 = 1_700_000_000 * 10**9
            for episode in range(spec.episodes):
                t0 = _episode(spec, T, rng, t0, header, emit, episode) + int(spec.gap_s * 1e9)
            messages.sort(key=lambda m: m[0])
            for log_time, kind, msg, msgtype in messages:
                writer.write(connections[kind], log_time, store.serialize_cdr(msg, msgtype))
    return path


def _episode(spec: DemoBagSpec, T, rng, t0: int, header, emit, episode: int) -> int:
    """Records one episode starting at t0 (ns); returns its end time."""
    hand = rng.uniform(-1, 1, 2)
    goal = rng.uniform(-1, 1, 2)
    if np.linalg.norm(goal - hand) < 0.8:
        goal = -hand * 0.9
    side = int(rng.integers(0, 2))
    route = expert_routes(torch.tensor(hand[None], dtype=torch.float32),
                          torch.tensor(goal[None], dtype=torch.float32), spec.reach_ticks)[0, side].numpy()
    targets = np.concatenate([route, np.repeat(route[-1:], spec.hold_ticks, axis=0)])
    # The operator announces the episode and its instruction just before the robot moves.
    announce = t0 - 100_000_000
    emit("episode", announce, T["std_msgs/msg/String"](data=f"episode {episode}"), "std_msgs/msg/String")
    emit("instruction", announce, T["std_msgs/msg/String"](data=INSTRUCTION), "std_msgs/msg/String")

    duration = len(targets) / spec.command_hz
    position, target = hand.astype(np.float64), hand.astype(np.float64)
    dt = 1.0 / spec.joint_state_hz
    next_camera = 0.0
    for step in range(int(duration * spec.joint_state_hz)):
        t = step * dt
        stamp = t0 + int(t * 1e9)
        tick = int(t * spec.command_hz + 1e-9)
        if abs(t * spec.command_hz - round(t * spec.command_hz)) < 1e-6 and tick < len(targets):
            target = targets[tick]
            emit("command", stamp + 2_000_000, _command(spec, T, header(stamp + 2_000_000), target),
                 COMMAND_TYPES[spec.command_type])
        position = position + (target - position) * (1 - math.exp(-dt / spec.servo_tau_s))
        values = {"gripper": 0.0, "hand_x": position[0], "hand_y": position[1]}
        emit("joints", stamp, T["sensor_msgs/msg/JointState"](
            header=header(stamp), name=list(RECORDED_JOINTS),
            position=np.array([values[n] for n in RECORDED_JOINTS]), velocity=np.zeros(3), effort=np.zeros(3)),
            "sensor_msgs/msg/JointState")
        if t + 1e-9 >= next_camera:
            next_camera += 1.0 / spec.camera_hz
            emit("camera", stamp, _image(spec, T, header(stamp), position, goal), _image_type(spec))
    return t0 + int(duration * 1e9)


def _image_type(spec: DemoBagSpec) -> str:
    return "sensor_msgs/msg/CompressedImage" if spec.image_format == "compressed" else "sensor_msgs/msg/Image"


def _image(spec: DemoBagSpec, T, header, hand: np.ndarray, goal: np.ndarray):
    rgb = render(torch.tensor(hand[None], dtype=torch.float32), torch.tensor(goal[None], dtype=torch.float32),
                 spec.image_size)[0].numpy()
    if spec.image_format == "compressed":
        return T["sensor_msgs/msg/CompressedImage"](header=header, format="jpeg",
                                                    data=np.frombuffer(encode_compressed(rgb), dtype=np.uint8))
    height, width, step, data = encode_raw(rgb)
    return T["sensor_msgs/msg/Image"](header=header, height=height, width=width, encoding="rgb8", is_bigendian=0,
                                      step=step, data=np.frombuffer(data, dtype=np.uint8))


def _command(spec: DemoBagSpec, T, header, target: np.ndarray):
    if spec.command_type == "JointTrajectory":
        point = T["trajectory_msgs/msg/JointTrajectoryPoint"](
            positions=target.astype(np.float64), velocities=np.zeros(0), accelerations=np.zeros(0),
            effort=np.zeros(0), time_from_start=T["builtin_interfaces/msg/Duration"](sec=0, nanosec=0))
        return T["trajectory_msgs/msg/JointTrajectory"](header=header, joint_names=list(JOINTS), points=[point])
    if spec.command_type == "JointState":
        return T["sensor_msgs/msg/JointState"](header=header, name=list(JOINTS), position=target.astype(np.float64),
                                               velocity=np.zeros(0), effort=np.zeros(0))
    if spec.command_type == "Float64MultiArray":
        layout = T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
        return T["std_msgs/msg/Float64MultiArray"](layout=layout, data=target.astype(np.float64))
    zero = T["builtin_interfaces/msg/Duration"](sec=0, nanosec=0)
    return T["snapflow_interfaces/msg/ActionChunk"](
        header=header, joint_names=list(JOINTS), horizon=1, action_dim=2, actions=target.astype(np.float32),
        dt=T["builtin_interfaces/msg/Duration"](sec=0, nanosec=int(1e9 / spec.command_hz)), policy_id="expert",
        denoising_steps=0, observation_stamp=header.stamp, inference_latency=zero, sequence=0)


def write_demo_bags(directory: Path, count: int, spec: DemoBagSpec = DemoBagSpec()) -> list[Path]:
    """`count` bags demo_000, demo_001, ... with different seeds."""
    from dataclasses import replace

    return [write_demo_bag(Path(directory) / f"demo_{i:03d}", replace(spec, seed=spec.seed + i))
            for i in range(count)]
