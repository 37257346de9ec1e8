"""The simulated robot over ROS 2 (real rclpy, isolated domain): demonstrations recorded through
its topics into a bag that trains as-is, chunk execution in policy mode with episode results,
recordings that are discarded unless closed, and the main job end to end at toy size."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from snapflow_ros.bags.dataset import load_bag_dataset
from snapflow_ros.sim.robot import STATE_NAMES
from snapflow_ros.sim.topics import sim_bag_config

pytestmark = pytest.mark.ros


@pytest.mark.parametrize("real_time", [False, True], ids=["stepped", "real-time"])
def test_demonstrations_recorded_through_ros_become_training_samples(tmp_path, real_time):
    from snapflow_ros.ros.sim_recording import record_demos

    bag, outcome = record_demos("reach-detour", 2, tmp_path / "bag", seed=0, image_size=32, real_time=real_time)
    assert outcome["successes"] == 2 and outcome["messages"]["/instruction"] == 2
    data = load_bag_dataset([bag], sim_bag_config(20.0), chunk_size=6)
    assert int(data.episodes.max()) == 1  # split at /episode_start
    assert len(data) >= outcome["messages"]["/joint_states"] - 4  # at most a tick per episode edge lost
    assert data.frames["top"].shape[1:] == (32, 32, 3)
    # Each action is the expert's target issued after the observation: at most 1 cm away.
    step = (data.actions[:, 0, :3] - data.states[:, :3]).norm(dim=1)
    assert float(step.max()) <= 0.0101 and float(step.mean()) > 0.003
    assert set(data.instructions) == {"reach the goal around the pillar"}


def _messages(bag: Path) -> list[tuple[str, int, bytes]]:
    from rosbags.highlevel import AnyReader

    with AnyReader([bag]) as reader:
        return [(c.topic, t, bytes(data)) for c, t, data in reader.messages()]


def test_a_stepped_recording_depends_on_the_seed_only(tmp_path):
    from snapflow_ros.ros.sim_recording import record_demos

    runs = [record_demos("reach-either", 2, tmp_path / name, seed=seed, image_size=32)[0]
            for name, seed in (("a", 3), ("b", 3), ("c", 4))]
    a, b, c = (_messages(bag) for bag in runs)
    assert a == b  # every message and log time, byte for byte
    assert a != c
    stamps = sorted({t for topic, t, _ in a if topic == "/joint_states"})
    assert set(np.diff(stamps)) == {50_000_000}  # one control period (20 Hz) of simulated time apart


@pytest.mark.parametrize("command", ["action_chunk", "joint_trajectory"])
def test_policy_mode_executes_chunks_and_reports_episodes(ros, command):
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import JointState
    from snapflow_interfaces.msg import EpisodeResult
    from trajectory_msgs.msg import JointTrajectory

    from snapflow_ros.ros.conversions import chunk_to_msg, chunk_to_trajectory, time_to_ns
    from snapflow_ros.ros.qos import COMMAND_QOS, SENSOR_QOS
    from snapflow_ros.ros.sim_robot import SimRobotNode

    robot = ros.node(SimRobotNode, parameter_overrides=[Parameter("task", value="reach"),
                                                        Parameter("episodes", value=2),
                                                        Parameter("control_rate_hz", value=50.0)])
    driver = ros.node(Node, "driver")
    as_message = chunk_to_msg if command == "action_chunk" else chunk_to_trajectory
    message_type = type(chunk_to_msg(_chunk(np.zeros((1, 4)), 0))) if command == "action_chunk" else JointTrajectory
    publisher = driver.create_publisher(message_type, command, COMMAND_QOS)
    results: list = []
    driver.create_subscription(EpisodeResult, "sim_robot/episode_result", results.append, COMMAND_QOS)

    def steer(msg: JointState) -> None:  # a perfect policy: 1 cm steps straight at the goal
        hand, goal = np.array(msg.position[:3]), robot.robot.hand_goals[0]
        targets = [hand + (goal - hand) * min(1.0, 0.01 * (k + 1) / max(np.linalg.norm(goal - hand), 1e-9))
                   for k in range(6)]
        stamp = time_to_ns(msg.header.stamp)
        publisher.publish(as_message(_chunk(np.array([np.append(t, 1.0) for t in targets]), stamp,
                                            dt_s=robot.dt_ns * 1e-9)))

    driver.create_subscription(JointState, "joint_states", steer, SENSOR_QOS)
    assert ros.spin_until(lambda: len(results) == 2, 60.0)
    assert all(r.success and r.task == "reach" for r in results), [r.failure for r in results]
    assert [r.episode for r in results] == [0, 1]
    if command == "action_chunk":  # each chunk taken: arrival minus the stamp of the joint states it answers
        latencies = np.concatenate([np.asarray(r.chunk_latency_ms) for r in results])
        assert len(latencies) >= sum(r.steps for r in results) // 2 and np.all(latencies > 0), latencies
    else:  # a JointTrajectory names no observation
        assert all(len(r.chunk_latency_ms) == 0 for r in results)


def test_policy_node_in_rtc_chunking_drives_the_robot_continuing_what_executes(ros, tmp_path):
    """policy_node with chunking: rtc serving a policy that takes a committed prefix drives
    sim_robot through its episodes; each chunk starts with the actions the chunk it replaces
    commands over the predicted delay (the weights are random: what is tested is the node's path)."""
    import torch
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from snapflow_interfaces.msg import ActionChunk, EpisodeResult

    from snapflow_ros.families.builtin import BuiltinVLA, BuiltinVLAConfig
    from snapflow_ros.files import save_policy
    from snapflow_ros.ros.conversions import msg_to_chunk
    from snapflow_ros.ros.policy_node import PolicyNode
    from snapflow_ros.ros.qos import COMMAND_QOS
    from snapflow_ros.ros.sim_robot import SimRobotNode

    torch.manual_seed(0)
    policy = BuiltinVLA(BuiltinVLAConfig(cameras=("top",), image_size=32, patch_size=8, state_dim=4, action_dim=4,
                                         chunk_size=8, width=32, num_heads=4, num_layers=1))
    checkpoint = save_policy(policy, tmp_path / "student", {"train_config": {"max_delay": 4}})
    ros.node(SimRobotNode, parameter_overrides=[Parameter("task", value="reach-either"),
                                                Parameter("episodes", value=2)])
    node = ros.node(PolicyNode, parameter_overrides=[Parameter(k, value=v) for k, v in {
        "checkpoint": str(checkpoint), "joint_names": list(STATE_NAMES), "cameras": ["top"], "action_dt": 0.05,
        "chunk_rate_hz": 5.0, "max_input_age": 0.5, "chunking": "rtc", "distillation": False}.items()])
    assert node.slot.policy.max_delay == 4
    listener = ros.node(Node, "listener")
    chunks, results = [], []
    listener.create_subscription(ActionChunk, "action_chunk", lambda m: chunks.append(msg_to_chunk(m)), COMMAND_QOS)
    listener.create_subscription(EpisodeResult, "sim_robot/episode_result", results.append, COMMAND_QOS)
    assert ros.spin_until(lambda: len(results) == 2, 60.0), f"{len(results)} episodes, {len(chunks)} chunks"
    assert [r.episode for r in results] == [0, 1]
    continued, broken = 0, []
    for previous, new in zip(chunks, chunks[1:]):
        # the previous chunk's action in force at the new start (floor: observations 20 Hz apart
        # are not exactly 4 steps apart, and rounding called half of the continued chunks broken)
        k = (new.start_ns - previous.start_ns) // 50_000_000
        assert new.start_ns >= new.observation_stamp_ns  # starts where execution is on arrival
        if 0 <= k < previous.horizon and np.allclose(new.actions[0], previous.actions[k], atol=1e-5):
            continued += 1
        else:  # what broke it: the offset, the delay the node saw, the latency
            broken.append((k, (new.start_ns - new.observation_stamp_ns) / 1e6, new.inference_latency_s * 1e3))
    # A chunk continues unless it arrived later than the delay it committed (its first actions
    # dropped as stale): one that kept its first action must continue.
    assert len(chunks) > 10 and not [b for b in broken if b[1] == 0], (continued, len(chunks), broken)
    assert continued >= 3 * (len(chunks) - 1) // 4, (continued, len(chunks), broken)


def test_invalid_commands_are_ignored_and_the_robot_holds(ros):
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from snapflow_ros.ros.conversions import chunk_to_msg
    from snapflow_ros.ros.qos import COMMAND_QOS
    from snapflow_ros.ros.sim_robot import SimRobotNode

    robot = ros.node(SimRobotNode, parameter_overrides=[Parameter("task", value="reach"),
                                                        Parameter("control_rate_hz", value=50.0)])
    start = robot.robot.full_obs[:3].copy()
    driver = ros.node(Node, "driver")
    chunks = driver.create_publisher(type(chunk_to_msg(_chunk(np.zeros((1, 4)), 0))), "action_chunk", COMMAND_QOS)
    trajectories = driver.create_publisher(JointTrajectory, "joint_trajectory", COMMAND_QOS)
    away = np.append(start + 0.2, 1.0)
    ros.spin_for(0.3)
    stamp = robot.get_clock().now().nanoseconds
    poisoned = chunk_to_msg(_chunk(np.array([away, away]), stamp))
    poisoned.actions = [*poisoned.actions[:4], float("nan"), *poisoned.actions[5:]]
    chunks.publish(poisoned)
    wrong = JointTrajectory(joint_names=["a", "b", "c", "d"],
                            points=[JointTrajectoryPoint(positions=list(away)) for _ in range(3)])
    wrong.header.stamp = robot.get_clock().now().to_msg()
    trajectories.publish(wrong)
    ros.spin_for(1.0)
    assert robot.robot.steps > 20 and robot.chunk is None
    assert np.allclose(robot.robot.full_obs[:3], start, atol=0.01)


def _chunk(actions: np.ndarray, stamp_ns: int, dt_s: float = 0.05):
    from snapflow_ros.policy.chunk import ActionChunk

    return ActionChunk(actions=actions.astype(np.float32), joint_names=STATE_NAMES, dt_s=dt_s, policy_id="test",
                       denoising_steps=1, observation_stamp_ns=stamp_ns, start_ns=stamp_ns, inference_latency_s=0.0,
                       sequence=0)


def test_a_recording_that_is_not_closed_leaves_no_bag(ros, tmp_path):
    from std_msgs.msg import String

    from snapflow_ros.ros.bag_recorder import BagRecorder
    from snapflow_ros.ros.qos import LATCHED_QOS

    recorder = ros.node(BagRecorder, {"/instruction": (String, LATCHED_QOS)}, tmp_path / "bag")
    ros.spin_for(0.2)
    recorder.destroy_node()
    ros.nodes.remove(recorder)
    assert not (tmp_path / "bag").exists() and not list(tmp_path.iterdir())


@pytest.mark.slow
def test_main_job_end_to_end_at_toy_size(tmp_path):
    import subprocess

    workdir = tmp_path / "demo"
    result = subprocess.run([str(Path(sys.executable).parent / "snapflow"), "sim-demo", "--workdir", str(workdir),
                             "--tasks", "reach", "reach-detour", "--demo-episodes", "3", "--teacher-steps", "20",
                             "--student-steps", "10", "--eval-episodes", "2", "--ros-episodes", "1"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "hot swap: chunks now come from" in result.stderr
    report = json.loads((workdir / "report.json").read_text())
    assert set(report["tasks"]) == {"reach", "reach-detour"}
    assert set(report["tasks"]["reach"]) == {"teacher@10", "teacher@2", "teacher@1", "student@1"}
    assert report["ros_closed_loop_student"]["reach"]["episodes"] == 1
    assert (workdir / "success_vs_latency.svg").read_text().startswith("<svg")
    assert "student@1" in result.stdout  # the table
    assert "what the full sim-table showed" in result.stdout
    assert "reach-either (3 seeds x 100 episodes)" in result.stdout
    evaluated = subprocess.run([str(Path(sys.executable).parent / "snapflow"), "sim-eval", "--teacher",
                                report["teacher"], "--student", report["student"], "--tasks", "reach",
                                "--episodes", "1",
                                "--extra-steps", "2", "--json", str(tmp_path / "eval.json"), "--latency-ms", "0", "200",
                                "--chunking", "plain", "blend", "rtc", "--plot", str(tmp_path / "eval.svg")],
                               capture_output=True, text=True, timeout=600)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    evaluation = json.loads((tmp_path / "eval.json").read_text())
    rows = evaluation["tasks"]["reach"]
    assert set(rows) == {"teacher@10", "teacher@10+guided-rtc", "teacher@2", "teacher@1", "student@1",
                         "student@1+blend", "student@1+rtc"}
    assert rows["teacher@10+guided-rtc"]["guided"] and rows["student@1+blend"]["chunking"] == "blend"
    assert "mean jump at chunk switches" in (tmp_path / "eval.svg").read_text()  # the latency-sweep plot
    paired = {(p["a"], p["b"]): p for p in evaluation["latency_sweep"]["200"]["paired"]}
    assert set(paired) == {("student@1+blend", "student@1"), ("student@1+rtc", "student@1"),
                           ("teacher@10+guided-rtc", "teacher@10")}
    assert all(p["episodes"] == 1 and 0 < p["mcnemar_p"] <= 1 for p in paired.values())
    assert all(r["episodes"] == 1 and len(r["ci95"]) == 2 for r in rows.values())
    sweep = evaluation["latency_sweep"]
    assert set(sweep) == {"0", "200"} and sweep["0"]["tasks"]["reach"] == rows
    delayed = sweep["200"]["tasks"]["reach"]["student@1"]
    assert delayed["boundary_jump"]["count"] > 0 and delayed["mean_jerk"] > 0
