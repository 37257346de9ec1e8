"""Starts sim_robot (Meta-World, headless) and a policy_node that drives it.

    ros2 launch snapflow_ros sim.launch.py checkpoint:=runs/sim-demo/student/policy task:=reach-detour
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    params = os.path.join(get_package_share_directory("snapflow_ros"), "config", "sim_robot.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=params,
                              description="YAML with the sim_robot and policy_node parameters"),
        DeclareLaunchArgument("checkpoint", description="Policy checkpoint the node serves"),
        DeclareLaunchArgument("task", default_value="reach-detour", description="Simulated task"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="configure and activate the lifecycle policy_node at start"),
        Node(package="snapflow_ros", executable="sim_robot", name="sim_robot", output="screen",
             parameters=[LaunchConfiguration("params_file"), {"task": LaunchConfiguration("task")}]),
        Node(package="snapflow_ros", executable="policy_node", name="policy_node", output="screen",
             parameters=[LaunchConfiguration("params_file"), {"checkpoint": LaunchConfiguration("checkpoint"),
                                                                "autostart": LaunchConfiguration("autostart")}]),
    ])
