"""Starts snapflow_ros' policy_node.

    ros2 launch snapflow_ros policy.launch.py
    ros2 launch snapflow_ros policy.launch.py params_file:=/path/robot.yaml namespace:=arm \
        joint_states_topic:=/joint_states trajectory_topic:=/arm_controller/joint_trajectory
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(
        get_package_share_directory("snapflow_ros"), "config", "policy_node.yaml"
    )
    arguments = [
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML file with the policy_node parameters"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="Policy checkpoint or export directory (empty: params file)"),
        DeclareLaunchArgument("backend", default_value="",
                              description="torch or onnxruntime (empty: params file)"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="configure and activate the lifecycle node at start"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="Namespace of the node and its relative topics"),
        DeclareLaunchArgument("joint_states_topic", default_value="joint_states",
                              description="sensor_msgs/JointState input"),
        DeclareLaunchArgument("instruction_topic", default_value="instruction",
                              description="std_msgs/String task instruction input (latched)"),
        DeclareLaunchArgument("action_chunk_topic", default_value="action_chunk",
                              description="snapflow_interfaces/ActionChunk output"),
        DeclareLaunchArgument("trajectory_topic", default_value="joint_trajectory",
                              description="trajectory_msgs/JointTrajectory output"),
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_policy_node)])


def _policy_node(context) -> list[Node]:
    overrides = {
        "checkpoint": LaunchConfiguration("checkpoint").perform(context),
        "backend": LaunchConfiguration("backend").perform(context),
    }
    # Later entries win; only the arguments actually given override the params file.
    parameters: list = [LaunchConfiguration("params_file").perform(context),
                        {name: value for name, value in overrides.items() if value},
                        {"autostart": LaunchConfiguration("autostart").perform(context).lower() == "true"}]
    return [
        Node(
            package="snapflow_ros",
            executable="policy_node",
            name="policy_node",
            namespace=LaunchConfiguration("namespace"),
            output="screen",
            emulate_tty=True,
            parameters=parameters,
            remappings=[
                ("joint_states", LaunchConfiguration("joint_states_topic")),
                ("instruction", LaunchConfiguration("instruction_topic")),
                ("action_chunk", LaunchConfiguration("action_chunk_topic")),
                ("joint_trajectory", LaunchConfiguration("trajectory_topic")),
            ],
        )
    ]
