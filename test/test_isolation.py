"""isolated_ros_env never picks a domain a participant on this machine already uses (a soak or
another test session beside this one), so their nodes cannot meet."""

from __future__ import annotations

import os

import pytest

from snapflow_ros.ros.isolation import domain_in_use, isolated_ros_env

pytestmark = pytest.mark.ros


def test_a_domain_with_a_participant_is_in_use_and_skipped(ros, monkeypatch):
    from rclpy.node import Node

    ros.node(Node, "occupant")
    ours = int(os.environ["ROS_DOMAIN_ID"])
    assert domain_in_use(ours)
    free = [d for d in range(1, 101) if d != ours and not domain_in_use(d)]
    # With every other domain taken but one, that one is chosen.
    monkeypatch.setattr("snapflow_ros.ros.isolation.domain_in_use", lambda d: d != free[0])
    assert isolated_ros_env()["ROS_DOMAIN_ID"] == str(free[0])
    monkeypatch.undo()
    for _ in range(20):
        assert isolated_ros_env()["ROS_DOMAIN_ID"] != str(ours)
    assert isolated_ros_env(domain_id=7)["ROS_DOMAIN_ID"] == "7"  # asked for: given as asked
