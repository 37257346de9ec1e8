"""ROS message <-> core type conversions (the job cv_bridge and friends do elsewhere)."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Duration, Time
from snapflow_interfaces.msg import ActionChunk as ActionChunkMsg
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from snapflow_ros.errors import InputError
from snapflow_ros.policy.chunk import ActionChunk

_NS = 1_000_000_000


def time_to_ns(stamp: Time) -> int:
    return stamp.sec * _NS + stamp.nanosec


def ns_to_time(ns: int) -> Time:
    return Time(sec=ns // _NS, nanosec=ns % _NS)


def seconds_to_duration(seconds: float) -> Duration:
    ns = round(seconds * _NS)
    return Duration(sec=ns // _NS, nanosec=ns % _NS)


def duration_to_seconds(duration: Duration) -> float:
    return duration.sec + duration.nanosec * 1e-9


def chunk_to_msg(chunk: ActionChunk) -> ActionChunkMsg:
    msg = ActionChunkMsg()
    msg.header.stamp = ns_to_time(chunk.start_ns)
    msg.joint_names = list(chunk.joint_names)
    msg.horizon = chunk.horizon
    msg.action_dim = chunk.action_dim
    msg.actions = chunk.actions.astype(np.float32).ravel().tolist()
    msg.dt = seconds_to_duration(chunk.dt_s)
    msg.policy_id = chunk.policy_id
    msg.denoising_steps = chunk.denoising_steps
    msg.observation_stamp = ns_to_time(chunk.observation_stamp_ns)
    msg.inference_latency = seconds_to_duration(chunk.inference_latency_s)
    msg.sequence = chunk.sequence
    return msg


def msg_to_chunk(msg: ActionChunkMsg) -> ActionChunk:
    """Inverse of chunk_to_msg; raises InputError when the sizes disagree."""
    expected = msg.horizon * msg.action_dim
    if len(msg.actions) != expected:
        raise InputError(
            f"ActionChunk 'actions' has {len(msg.actions)} values, horizon*action_dim = {expected}"
        )
    return ActionChunk(
        actions=np.asarray(msg.actions, dtype=np.float32).reshape(msg.horizon, msg.action_dim),
        joint_names=tuple(msg.joint_names),
        dt_s=duration_to_seconds(msg.dt),
        policy_id=msg.policy_id,
        denoising_steps=msg.denoising_steps,
        observation_stamp_ns=time_to_ns(msg.observation_stamp),
        start_ns=time_to_ns(msg.header.stamp),
        inference_latency_s=duration_to_seconds(msg.inference_latency),
        sequence=msg.sequence,
    )


def chunk_to_trajectory(chunk: ActionChunk) -> JointTrajectory:
    """A JointTrajectory for ros2_control's joint_trajectory_controller: point k at k*dt."""
    msg = JointTrajectory()
    msg.header.stamp = ns_to_time(chunk.start_ns)
    msg.joint_names = list(chunk.joint_names)
    for k, action in enumerate(chunk.actions):
        point = JointTrajectoryPoint()
        point.positions = action.astype(np.float64).tolist()
        point.time_from_start = seconds_to_duration(k * chunk.dt_s)
        msg.points.append(point)
    return msg
