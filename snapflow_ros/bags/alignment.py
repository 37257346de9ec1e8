"""Stamp alignment at a fixed control rate: the latest message at each tick, if fresh enough.

The same rule as the node's ObservationAssembler (latest value, bounded age), applied offline.
All times are int64 nanoseconds.
"""

from __future__ import annotations

import numpy as np


def latest_at(stamps: np.ndarray, ticks: np.ndarray, max_age_ns: int, not_before_ns: int) -> np.ndarray:
    """Index of the latest stamp <= each tick; -1 where there is none, it is older than
    max_age_ns, or it precedes not_before_ns (the episode start: no carry-over between episodes)."""
    index = np.searchsorted(stamps, ticks, side="right") - 1
    found = index >= 0
    stamp = np.where(found, stamps[np.maximum(index, 0)], np.iinfo(np.int64).min)
    ok = found & (ticks - stamp <= max_age_ns) & (stamp >= not_before_ns)
    return np.where(ok, index, -1)


def following_command(commands: np.ndarray, observed: np.ndarray, period_ns: int, max_age_ns: int,
                      not_before_ns: int) -> np.ndarray:
    """Index of the command that answered each observation (stamped `observed`): the first one
    issued within a control period after it, else the latest one before it (still in force, at
    most max_age_ns old); -1 where there is none. Referring to the observation's own stamp, not
    the sampling tick, keeps pairs right when the recorded rate jitters around the tick grid."""
    after = np.searchsorted(commands, observed, side="left")
    answered = (after < len(commands)) & (commands[np.minimum(after, len(commands) - 1)] < observed + period_ns)
    return np.where(answered, after, latest_at(commands, observed, max_age_ns, not_before_ns))


def split_by_gap(stamps: np.ndarray, gap_ns: int) -> list[tuple[int, int]]:
    """(start, end) stamp windows of runs without a gap longer than gap_ns."""
    if len(stamps) == 0:
        return []
    breaks = np.flatnonzero(np.diff(stamps) > gap_ns)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(stamps) - 1]])
    return [(int(stamps[s]), int(stamps[e])) for s, e in zip(starts, ends)]


def split_by_markers(markers: np.ndarray, end_ns: int) -> list[tuple[int, int]]:
    """Windows from each episode-start marker to just before the next (the last to end_ns)."""
    bounds = [int(m) for m in markers] + [end_ns + 1]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(len(markers)) if bounds[i + 1] > bounds[i]]


def control_ticks(first_ns: int, last_ns: int, period_ns: int) -> np.ndarray:
    """Sample times first, first + period, ... up to last (inclusive)."""
    if last_ns < first_ns:
        return np.zeros(0, dtype=np.int64)
    return np.arange(first_ns, last_ns + 1, period_ns, dtype=np.int64)
