"""Chunk execution timing: which action of a chunk is in force when, drop the actions inference
latency already made stale, and blend the overlap with the previous chunk so the commanded
trajectory does not jump."""

from __future__ import annotations

import math

import numpy as np

from snapflow_ros.errors import ConfigError


def index_in_force(start_ns: int, dt_ns: int, horizon: int, now_ns: int) -> int:
    """The action of a chunk starting at start_ns in force at now_ns: action k from start + k*dt
    (as a joint_trajectory_controller executes it), action 0 before the start, the last one once
    the chunk has run out. The epsilon keeps a time exactly on the grid in its own step."""
    k = math.floor((now_ns - start_ns) / dt_ns + 1e-9)
    return min(max(k, 0), horizon - 1)


def drop_stale(actions: np.ndarray, observation_ns: int, dt_s: float, now_ns: int) -> tuple[np.ndarray, int]:
    """Action k covers [observation_ns + k*dt, observation_ns + (k+1)*dt). Drops the actions whose
    interval has passed by `now_ns` (keeping at least the last one) and returns the rest with the
    start time of the first kept action."""
    elapsed = max(0.0, (now_ns - observation_ns) * 1e-9)
    skip = min(int(math.floor(elapsed / dt_s + 1e-9)), len(actions) - 1)
    return actions[skip:], observation_ns + round(skip * dt_s * 1e9)


def blend_overlap(previous: np.ndarray, previous_start_ns: int, actions: np.ndarray, start_ns: int,
                  dt_s: float, decay: float) -> np.ndarray:
    """Mixes the new chunk with the still-pending part of the previous one where they overlap:
    weight of the previous chunk = exp(-decay * k) at the k-th overlapping action (1 -> 0)."""
    if decay < 0:
        raise ConfigError(f"blend decay must be >= 0, got {decay}")
    first, overlap = blend_window(len(previous), previous_start_ns, len(actions), start_ns, dt_s)
    if overlap == 0:
        return actions
    weights = np.exp(-decay * np.arange(overlap))[:, None]
    blended = actions.copy()
    blended[:overlap] = weights * previous[first: first + overlap] + (1 - weights) * actions[:overlap]
    return blended


def blend_window(previous_len: int, previous_start_ns: int, new_len: int, start_ns: int,
                 dt_s: float) -> tuple[int, int]:
    """(index in the previous chunk of the new chunk's first action, number of overlapping
    actions); overlap 0 when the chunks do not overlap or are not on the same time grid."""
    offset = (start_ns - previous_start_ns) * 1e-9 / dt_s
    first = int(round(offset))
    if abs(offset - first) > 1e-3 or first < 0:
        return first, 0  # not on the same time grid: nothing to blend safely
    return first, max(0, min(previous_len - first, new_len))
