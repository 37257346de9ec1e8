"""handover_jump: the jump at a chunk switch, on the chunks ChunkExecutor schedules in each mode."""

import math

import numpy as np
import pytest

from snapflow_ros.policy.chunk_executor import ChunkExecutor, ExecutorConfig
from snapflow_ros.policy.handover import handover_jump

MS = 1_000_000
DT_NS = 50 * MS
VELOCITY = np.array([1.0, 2.0])
RAMP = np.arange(8)[:, None] * VELOCITY  # action k = k * (1, 2): a trajectory in motion
UNIT = np.array([0.6, 0.8])              # an offset of norm 1


def test_a_plain_switch_jumps_by_the_difference_of_the_action_it_replaces():
    rng = np.random.default_rng(0)
    executor = ChunkExecutor(ExecutorConfig(action_dt_s=0.05))
    previous = executor.accept(rng.normal(size=(8, 2)), 0, 0, "p")
    new = executor.accept(rng.normal(size=(8, 2)), 110 * MS, 245 * MS, "p")  # off the previous grid
    expected = np.linalg.norm(new.action_at(245 * MS, DT_NS) - previous.action_at(245 * MS, DT_NS))
    assert new.handover_steps == 1 and expected > 0
    assert handover_jump(previous, new, DT_NS) == pytest.approx(expected)


def test_a_chunk_that_ran_out_is_compared_through_its_last_action():
    executor = ChunkExecutor(ExecutorConfig(action_dt_s=0.05))
    previous = executor.accept(RAMP[:4], 0, 0, "p")
    new = executor.accept(np.full((8, 2), 5.0), 1000 * MS, 1000 * MS, "p")
    assert handover_jump(previous, new, DT_NS) == pytest.approx(np.linalg.norm(5.0 - RAMP[3]))


def rtc_switch(generated_offset: np.ndarray) -> tuple[float, int]:
    """Observation at 100 ms, arrival 130 ms later: d = 3 committed actions, 2 of them stale."""
    executor = ChunkExecutor(ExecutorConfig(action_dt_s=0.05, chunking="rtc"))
    previous = executor.accept(RAMP, 0, 0, "p")
    committed = executor.upcoming_actions(100 * MS)[:3]
    np.testing.assert_array_equal(committed, RAMP[2:5])
    generated = (np.arange(3, 8)[:, None] + 2) * VELOCITY + generated_offset  # smooth continuation of the ramp
    new = executor.accept(np.concatenate([committed, generated]), 100 * MS, 230 * MS, "p", committed=3)
    return handover_jump(previous, new, DT_NS), new.handover_steps


def test_rtc_continuing_the_prefix_smoothly_does_not_jump():
    jump, steps = rtc_switch(np.zeros(2))
    assert steps == 2 and jump == pytest.approx(0.0, abs=1e-12)


def test_rtc_measures_the_step_of_the_first_generated_action_away_from_the_old_trajectory():
    jump, steps = rtc_switch(UNIT)
    assert steps == 2 and jump == pytest.approx(1.0)


def test_blending_spreads_a_unit_jump_over_its_window():
    executor = ChunkExecutor(ExecutorConfig(action_dt_s=0.05, chunking="blend", blend_decay=1.0))
    previous = executor.accept(np.zeros((8, 2)), 0, 0, "a")
    new = executor.accept(np.tile(UNIT, (8, 1)), 100 * MS, 100 * MS, "a")
    # new_k = (1 - exp(-k)) * UNIT over the 5-step window; the largest increment is the first, 1 - 1/e
    jump = handover_jump(previous, new, DT_NS)
    assert new.handover_steps == 5
    assert jump < 1.0 and jump == pytest.approx(1 - math.exp(-1))
    unblended = ChunkExecutor(ExecutorConfig(action_dt_s=0.05))
    unblended.accept(np.zeros((8, 2)), 0, 0, "a")
    assert handover_jump(previous, unblended.accept(np.tile(UNIT, (8, 1)), 100 * MS, 100 * MS, "a"),
                         DT_NS) == pytest.approx(1.0)
