"""Joint positions by name from a sensor_msgs/JointState (rclpy's or rosbags' message objects)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from snapflow_ros.errors import InputError


def joint_positions(msg, names: Sequence[str], source: str = "joint_states", field: str = "position") -> np.ndarray:
    """Values of `field` for `names`, in that order, from a JointState whose order may differ.
    `source` (topic, or bag and topic) names the origin in errors."""
    values = getattr(msg, field)
    if len(values) != len(msg.name):
        raise InputError(f"{source}: '{field}' has {len(values)} values for {len(msg.name)} names")
    index = {name: i for i, name in enumerate(msg.name)}
    missing = [name for name in names if name not in index]
    if missing:
        raise InputError(f"{source}: joints {missing} missing from 'name' (got {list(msg.name)})")
    state = np.array([values[index[name]] for name in names], dtype=np.float64)
    if not np.all(np.isfinite(state)):
        bad = [n for n, v in zip(names, state) if not np.isfinite(v)]
        raise InputError(f"{source}: non-finite '{field}' for joints {bad}")
    return state
