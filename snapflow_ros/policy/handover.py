"""The jump at a chunk switch: how far the commanded trajectory departs from the one the previous
chunk would have gone on commanding, when the new chunk takes over.

Measured on increments, not positions: with o_k the previous chunk's action at arrival + k*dt
(its last once it has run out) and n_k the new chunk's, and n_{-1} = o_{-1} the action in force
just before the arrival,

    j_k = || (n_k - n_{k-1}) - (o_k - o_{k-1}) ||_2   for k in 0 .. handover_steps - 1

and the jump is max_k j_k. Why increments, over the handover window only:
  - plain: the window is the arrival step alone, and j_0 = ||n_0 - o_0||, the step from the
    action replaced to the new chunk's first.
  - rtc: the kept committed prefix repeats the previous chunk exactly, so j_k = 0 on it; at the
    first generated action j_k is the step away from the old trajectory beyond the step the old
    one took itself. A continuation that goes on smoothly gives ~0 even where the old trajectory
    moves, where a position difference would still count the motion.
  - blend: a jump blended over its window arrives as several smaller increments; the largest
    is what the robot feels.
Past the window the chunks differ by what the policy decided, which is no handover artefact.
"""

from __future__ import annotations

import numpy as np

from snapflow_ros.policy.chunk_executor import ScheduledChunk


def handover_jump(previous: ScheduledChunk, new: ScheduledChunk, dt_ns: int) -> float:
    """The jump (robot units) when `new` replaces `previous` at new.arrival_ns (see the module)."""
    times = new.arrival_ns + dt_ns * np.arange(-1, max(new.handover_steps, 1))
    old = np.stack([previous.action_at(int(t), dt_ns) for t in times]).astype(np.float64)
    ahead = np.stack([new.action_at(int(t), dt_ns) for t in times[1:]]).astype(np.float64)
    ahead = np.concatenate([old[:1], ahead])  # n_{-1} = o_{-1}: both start from what was in force
    difference = np.diff(ahead, axis=0) - np.diff(old, axis=0)
    return float(np.linalg.norm(difference.reshape(len(difference), -1), axis=1).max())
