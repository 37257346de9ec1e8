"""sim_robot: the Meta-World robot as a ROS 2 node, stepping in real time at control_rate_hz.

Publishes: camera/top/image_raw (Image rgb8) or camera/top/compressed (CompressedImage jpeg),
           joint_states (JointState: ee_x, ee_y, ee_z, gripper), instruction (latched String),
           episode_start (String, at each reset), ~/episode_result (snapflow_interfaces/EpisodeResult);
           in expert mode also joint_commands (JointTrajectory: the expert's target, one point).
Stepped (parameter `stepped`): no timer; the owner steps it and the stamps follow a simulated
clock, so a recorded bag depends on the seed only.
Executes:  action_chunk (snapflow_interfaces/ActionChunk) or joint_trajectory (JointTrajectory)
           in policy mode. Action j of a chunk is the target of the step that ends at
           start + (j + 1) * dt; chunks computed before the current episode began are ignored;
           with no usable chunk the robot holds its position.
Every tick: step the simulation with the target in force, then publish what the camera and the
joints see, stamped now. Episodes end in success, failure (pillar, out of steps) or after
max_steps, and the robot resets to a new layout.
"""

from __future__ import annotations

import numpy as np
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image, JointState
from snapflow_interfaces.msg import ActionChunk, EpisodeResult
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from snapflow_ros.errors import ConfigError, InputError
from snapflow_ros.ros.conversions import msg_to_chunk, ns_to_time, time_to_ns
from snapflow_ros.ros.parameters import ParameterSpec, declare_parameters
from snapflow_ros.ros.qos import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS
from snapflow_ros.ros.spin import spin_node
from snapflow_ros.sensors.images import encode_compressed, encode_raw
from snapflow_ros.sim.robot import STATE_NAMES, MetaWorldRobot
from snapflow_ros.sim.tasks import get_task
from snapflow_ros.sim.topics import (
    CAMERA_TOPIC,
    CHUNK_TOPIC,
    COMPRESSED_CAMERA_TOPIC,
    EPISODE_RESULT_TOPIC,
    EPISODE_START_TOPIC,
    EXPERT_COMMAND_TOPIC,
    INSTRUCTION_TOPIC,
    JOINT_STATE_TOPIC,
    SIM_ROBOT_NODE,
    TRAJECTORY_TOPIC,
)

SIM_ROBOT_PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("task", Parameter.Type.STRING, "reach-detour",
                  "Simulated task: a built-in one (snapflow_ros.sim.builtin_tasks) or one of task_file.",
                  read_only=True),
    ParameterSpec("task_file", Parameter.Type.STRING, "",
                  "Python file defining TASKS (a list of snapflow_ros.sim.tasks.SimTask); empty: built-ins only.",
                  read_only=True),
    ParameterSpec("mode", Parameter.Type.STRING, "policy",
                  "policy: execute incoming chunks; expert: the scripted expert drives and its targets are "
                  "published on joint_commands (recording demonstrations).", read_only=True),
    ParameterSpec("seed", Parameter.Type.INTEGER, 0, "Seed of the layouts (and of the expert's route choices).",
                  read_only=True),
    ParameterSpec("episodes", Parameter.Type.INTEGER, 0, "Stop stepping after this many episodes; 0: never.",
                  range=(0, 1_000_000), read_only=True),
    ParameterSpec("control_rate_hz", Parameter.Type.DOUBLE, 20.0, "Simulation steps (and observations) per second.",
                  range=(1.0, 200.0), read_only=True),
    ParameterSpec("image_size", Parameter.Type.INTEGER, 32, "Camera image side in pixels.", range=(16, 512),
                  read_only=True),
    ParameterSpec("camera_format", Parameter.Type.STRING, "raw", "raw (Image rgb8) or compressed (jpeg).",
                  read_only=True),
    ParameterSpec("stepped", Parameter.Type.BOOL, False,
                  "No timer: the owner calls step_once(), and stamps follow a simulated clock that advances "
                  "one control period per step (a recording is then the same for a seed on any machine, "
                  "and as fast as the machine allows).", read_only=True),
)

SIM_EPOCH_NS = 1_000_000_000  # where a stepped robot's clock starts


class SimRobotNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__(SIM_ROBOT_NODE, **kwargs)
        declare_parameters(self, SIM_ROBOT_PARAMETERS)
        value = {spec.name: self.get_parameter(spec.name).value for spec in SIM_ROBOT_PARAMETERS}
        if value["mode"] not in ("policy", "expert"):
            raise ConfigError(f"parameter 'mode' must be policy or expert, got {value['mode']!r}")
        if value["camera_format"] not in ("raw", "compressed"):
            raise ConfigError(f"parameter 'camera_format' must be raw or compressed, got {value['camera_format']!r}")
        self.task = get_task(value["task"], value["task_file"] or None)
        self.expert_mode = value["mode"] == "expert"
        self.max_episodes = value["episodes"]
        self.compressed = value["camera_format"] == "compressed"
        self.dt_ns = round(1e9 / value["control_rate_hz"])
        self.stepped = value["stepped"]
        self.sim_now_ns = SIM_EPOCH_NS
        self.messages_sent = 0  # on the recorded topics (camera, joints, commands, instruction, episode_start)
        self.robot = MetaWorldRobot(self.task, value["seed"], value["image_size"])
        self.expert = self.task.expert(self.robot, value["seed"] + 1) if self.expert_mode else None
        self.results: list[EpisodeResult] = []
        self.chunk = None  # (actions, start_ns, dt_ns) of the newest usable chunk

        camera_topic = COMPRESSED_CAMERA_TOPIC if self.compressed else CAMERA_TOPIC
        self.camera_publisher = self.create_publisher(CompressedImage if self.compressed else Image, camera_topic,
                                                      SENSOR_QOS)
        self.joint_publisher = self.create_publisher(JointState, JOINT_STATE_TOPIC, SENSOR_QOS)
        self.instruction_publisher = self.create_publisher(String, INSTRUCTION_TOPIC, LATCHED_QOS)
        self.episode_publisher = self.create_publisher(String, EPISODE_START_TOPIC, LATCHED_QOS)
        self.result_publisher = self.create_publisher(EpisodeResult, "~/" + EPISODE_RESULT_TOPIC, COMMAND_QOS)
        if self.expert_mode:
            self.command_publisher = self.create_publisher(JointTrajectory, EXPERT_COMMAND_TOPIC, COMMAND_QOS)
        else:
            self.create_subscription(ActionChunk, CHUNK_TOPIC, self.chunk_callback, COMMAND_QOS)
            self.create_subscription(JointTrajectory, TRAJECTORY_TOPIC, self.trajectory_callback,
                                     COMMAND_QOS)
        self.timer = None
        self.episode_start_ns = None
        if not self.stepped:  # a stepped robot starts on its first step, once its subscribers are up
            self._start_episode()
            self.timer = self.create_timer(1.0 / value["control_rate_hz"], self.tick)

    def now_ns(self) -> int:
        return self.sim_now_ns if self.stepped else self.get_clock().now().nanoseconds

    def step_once(self) -> None:
        """Stepped mode: the first call starts the first episode; each later one is one control
        period of simulated time, then the tick."""
        if self.episode_start_ns is None:
            self._start_episode()
            return
        self.sim_now_ns += self.dt_ns
        self.tick()

    def recorded_publishers(self) -> list:
        """The publishers a recording listens to (a stepped recording waits until each is matched)."""
        publishers = [self.camera_publisher, self.joint_publisher, self.instruction_publisher, self.episode_publisher]
        return publishers + ([self.command_publisher] if self.expert_mode else [])

    # --- commands in ------------------------------------------------------------------------
    def chunk_callback(self, msg: ActionChunk) -> None:
        try:
            chunk = msg_to_chunk(msg)
        except InputError as error:
            self._reject(f"{CHUNK_TOPIC}: {error}")
            return
        started = self.episode_start_ns is not None
        if started and chunk.observation_stamp_ns >= self.episode_start_ns:  # never act on a previous episode
            if self._accept(CHUNK_TOPIC, chunk.joint_names, chunk.actions, chunk.start_ns, round(chunk.dt_s * 1e9)):
                # End to end: camera frame and joint states stamped here -> policy -> this chunk back here.
                age_ns = self.now_ns() - chunk.observation_stamp_ns
                self.chunk_latencies_ms.append(age_ns / 1e6)

    def trajectory_callback(self, msg: JointTrajectory) -> None:
        if len(msg.points) < 2:
            self._reject(f"{TRAJECTORY_TOPIC}: needs two or more points (their spacing is the step time)")
            return
        start = time_to_ns(msg.header.stamp)
        if self.episode_start_ns is not None and start >= self.episode_start_ns:
            step = msg.points[1].time_from_start
            actions = [list(p.positions) for p in msg.points]
            self._accept(TRAJECTORY_TOPIC, tuple(msg.joint_names), actions, start,
                         step.sec * 1_000_000_000 + step.nanosec)

    def _accept(self, topic: str, names: tuple[str, ...], actions, start_ns: int, dt_ns: int) -> bool:
        """Commands are checked here, so a bad one is dropped instead of reaching the simulation."""
        if tuple(names) != STATE_NAMES:
            self._reject(f"{topic}: joint names {list(names)}, expected {list(STATE_NAMES)}")
            return False
        try:
            actions = np.asarray(actions, dtype=np.float64)
        except ValueError:  # rows of different lengths
            actions = np.zeros(0)
        if actions.ndim != 2 or actions.shape[1] != len(STATE_NAMES) or not np.all(np.isfinite(actions)) or dt_ns <= 0:
            self._reject(f"{topic}: actions must be finite rows of {len(STATE_NAMES)} values with a positive step time")
            return False
        self.chunk = (actions, start_ns, dt_ns)
        return True

    def _reject(self, reason: str) -> None:
        self.get_logger().warning(f"command ignored, holding: {reason}", throttle_duration_sec=1.0)

    def _target(self, now_ns: int) -> np.ndarray:
        if self.expert_mode:
            return self.pending
        hold = np.append(self.robot.full_obs[:3], self.robot.full_obs[3])
        if self.chunk is None:
            return hold
        actions, start, dt = self.chunk
        index = round((now_ns - start) / dt) - 1  # the step ending now
        return actions[min(max(index, 0), len(actions) - 1)] if index < len(actions) else hold

    # --- the loop ---------------------------------------------------------------------------
    def tick(self) -> None:
        if self.max_episodes and len(self.results) >= self.max_episodes:
            return
        now = self.now_ns()
        outcome = self.robot.step(self._target(now))
        if outcome.done:
            self._finish(outcome)
            return
        self._publish(outcome.observation, now)

    def _start_episode(self) -> None:
        self.chunk = None
        self.chunk_latencies_ms: list[float] = []
        observation = self.robot.reset()
        self.episode_start_ns = self.now_ns()
        if self.expert:
            self.expert.reset()
        self.episode_publisher.publish(String(data=f"{self.task.name} episode {len(self.results)}"))
        self.instruction_publisher.publish(String(data=self.task.instruction))
        self.messages_sent += 2
        self._publish(observation, self.episode_start_ns)

    def _finish(self, outcome) -> None:
        result = EpisodeResult(task=self.task.name, episode=len(self.results), success=outcome.success,
                               failure=outcome.failure, steps=self.robot.steps,
                               chunk_latency_ms=self.chunk_latencies_ms)
        result.header.stamp = ns_to_time(self.now_ns())
        self.results.append(result)
        self.result_publisher.publish(result)
        self.get_logger().info(f"episode {result.episode}: {'success' if result.success else result.failure} "
                               f"after {result.steps} steps")
        if not self.max_episodes or len(self.results) < self.max_episodes:
            self._start_episode()

    def _publish(self, observation, stamp_ns: int) -> None:
        stamp = ns_to_time(stamp_ns)
        if self.compressed:
            image = CompressedImage(format="jpeg", data=encode_compressed(observation.image))
        else:
            height, width, step, data = encode_raw(observation.image)
            image = Image(height=height, width=width, encoding="rgb8", step=step, data=data)
        image.header.stamp = stamp
        self.camera_publisher.publish(image)
        joints = JointState(name=list(STATE_NAMES), position=observation.state.tolist())
        joints.header.stamp = stamp
        self.joint_publisher.publish(joints)
        self.messages_sent += 2
        if self.expert_mode:
            # The command in force after this observation, issued right after it.
            self.pending = self.expert.target()
            command = JointTrajectory(joint_names=list(STATE_NAMES),
                                      points=[JointTrajectoryPoint(positions=self.pending.tolist())])
            command.header.stamp = ns_to_time(self.now_ns())
            self.command_publisher.publish(command)
            self.messages_sent += 1

    def destroy_node(self) -> None:
        if hasattr(self, "robot"):
            self.robot.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    spin_node(SIM_ROBOT_NODE, SimRobotNode, args)


if __name__ == "__main__":
    main()
