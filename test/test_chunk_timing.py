"""Chunk execution timing: the action in force, stale actions dropped by measured latency,
overlap blended."""

import numpy as np
import pytest

from snapflow_ros.policy.chunk_timing import blend_overlap, blend_window, drop_stale, index_in_force

ACTIONS = np.arange(10, dtype=np.float32)[:, None]  # action k = k
MS = 1_000_000


def test_actions_already_due_are_dropped():
    kept, start = drop_stale(ACTIONS, observation_ns=0, dt_s=0.1, now_ns=250 * MS)
    assert kept[:, 0].tolist() == [2, 3, 4, 5, 6, 7, 8, 9]  # [0, 0.1) and [0.1, 0.2) are over at 0.25 s
    assert start == 200 * MS
    kept, start = drop_stale(ACTIONS, 0, 0.1, 0)
    assert len(kept) == 10 and start == 0
    kept, _ = drop_stale(ACTIONS, 0, 0.1, 5_000 * MS)  # everything late: keep the last one
    assert kept[:, 0].tolist() == [9]


def test_overlap_is_blended_from_old_to_new():
    previous, new = np.zeros((10, 1)), np.ones((10, 1))
    blended = blend_overlap(previous, 0, new, 300 * MS, dt_s=0.1, decay=1.0)
    # previous covers the new chunk's first 7 actions; weights of the old chunk exp(-k)
    np.testing.assert_allclose(blended[:7, 0], 1 - np.exp(-np.arange(7)))
    np.testing.assert_array_equal(blended[7:], 1)
    # off-grid start or no overlap: the new chunk as it is
    np.testing.assert_array_equal(blend_overlap(previous, 0, new, 350 * MS, 0.1, 1.0), new)
    np.testing.assert_array_equal(blend_overlap(previous, 0, new, 2_000 * MS, 0.1, 1.0), new)
    with pytest.raises(ValueError):
        blend_overlap(previous, 0, new, 0, 0.1, -1.0)


def test_the_action_in_force_follows_the_grid_and_holds_the_last():
    dt = 100 * MS
    assert [index_in_force(1000 * MS, dt, 5, t * MS) for t in (0, 1000, 1099, 1100, 1399, 1400, 9000)] == \
        [0, 0, 0, 1, 3, 4, 4]


def test_the_blend_window_is_the_overlap_on_a_shared_grid():
    assert blend_window(10, 0, 10, 300 * MS, 0.1) == (3, 7)
    assert blend_window(10, 0, 4, 300 * MS, 0.1) == (3, 4)  # the new chunk ends first
    assert blend_window(10, 0, 10, 350 * MS, 0.1)[1] == 0   # off the grid
    assert blend_window(10, 0, 10, 2_000 * MS, 0.1)[1] == 0  # after the previous chunk's end
    assert blend_window(10, 300 * MS, 10, 0, 0.1)[1] == 0    # before the previous chunk's start
