"""Chunk execution timing: drop the actions inference latency already made stale, and blend the
overlap with the previous chunk so the commanded trajectory does not jump."""

from __future__ import annotations

import math

import numpy as np

from snapflow_ros.errors import ConfigError


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
    offset = (start_ns - previous_start_ns) * 1e-9 / dt_s
    first = int(round(offset))
    if abs(offset - first) > 1e-3 or first < 0:
        return actions  # not on the same time grid: nothing to blend safely
    overlap = min(len(previous) - first, len(actions))
    if overlap <= 0:
        return actions
    weights = np.exp(-decay * np.arange(overlap))[:, None]
    blended = actions.copy()
    blended[:overlap] = weights * previous[first: first + overlap] + (1 - weights) * actions[:overlap]
    return blended
