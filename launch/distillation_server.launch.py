"""Starts snapflow_ros' distillation_server (jobs run in their own processes).

    ros2 launch snapflow_ros distillation_server.launch.py policy_node:=/arm/policy_node
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(
        get_package_share_directory("snapflow_ros"), "config", "distillation_server.yaml"
    )
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML file with the distillation_server parameters"),
        DeclareLaunchArgument("policy_node", default_value="/policy_node",
                              description="Policy node a finished job may swap the student into"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the server"),
        Node(
            package="snapflow_ros",
            executable="distillation_server",
            name="distillation_server",
            namespace=LaunchConfiguration("namespace"),
            output="screen",
            parameters=[LaunchConfiguration("params_file"),
                        {"policy_node": LaunchConfiguration("policy_node")}],
        ),
    ])
