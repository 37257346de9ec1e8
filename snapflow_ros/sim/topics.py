"""sim_robot's topics, named once. The node publishes and subscribes to them relative to its
namespace (so a launch file can move it); a recording in the root namespace and the bags it writes
name them with root_name(); sim_bag_config reads such a bag."""

from __future__ import annotations

from snapflow_ros.bags.config import BagDatasetConfig
from snapflow_ros.sim.robot import STATE_NAMES

SIM_ROBOT_NODE = "sim_robot"
CAMERA = "top"                                      # the policy's name of the one camera
CAMERA_TOPIC = "camera/top/image_raw"               # sensor_msgs/Image rgb8
COMPRESSED_CAMERA_TOPIC = "camera/top/compressed"   # sensor_msgs/CompressedImage jpeg
JOINT_STATE_TOPIC = "joint_states"                  # STATE_NAMES
INSTRUCTION_TOPIC = "instruction"                   # latched std_msgs/String
EPISODE_START_TOPIC = "episode_start"               # std_msgs/String at each reset
EXPERT_COMMAND_TOPIC = "joint_commands"             # expert mode: its targets, the demonstrations' actions
CHUNK_TOPIC = "action_chunk"                        # policy mode: ActionChunk (policy_node's output)
TRAJECTORY_TOPIC = "joint_trajectory"               # policy mode: JointTrajectory
EPISODE_RESULT_TOPIC = "episode_result"             # the node's own (~/): see EPISODE_RESULT_PATH
EPISODE_RESULT_PATH = f"{SIM_ROBOT_NODE}/{EPISODE_RESULT_TOPIC}"  # as another node subscribes to it


def root_name(topic: str) -> str:
    """`topic` in the root namespace: how a recording beside the robot, and its bag, name it."""
    return "/" + topic


def sim_bag_config(rate_hz: float) -> BagDatasetConfig:
    """How bags recorded from sim_robot's topics are read (its expert's commands as actions)."""
    return BagDatasetConfig(cameras={CAMERA: root_name(CAMERA_TOPIC)}, joint_names=STATE_NAMES,
                            joint_state_topic=root_name(JOINT_STATE_TOPIC),
                            instruction_topic=root_name(INSTRUCTION_TOPIC),
                            action_topic=root_name(EXPERT_COMMAND_TOPIC), rate_hz=rate_hz,
                            max_staleness=1.5 / rate_hz, episode_split="topic",
                            episode_topic=root_name(EPISODE_START_TOPIC))
