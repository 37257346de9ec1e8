"""ChunkExecutor's rules without ROS: when a chunk is due, latency -> executed steps, stale
actions dropped, overlap blended, and the action in force at any time."""

import numpy as np
import pytest

from snapflow_ros.errors import ConfigError
from snapflow_ros.policy.chunk_executor import ChunkExecutor, ExecutorConfig, Trigger

MS = 1_000_000
CHUNK = np.arange(8, dtype=np.float32)[:, None]  # action k = k


def test_without_a_watermark_the_period_decides():
    executor = ChunkExecutor(ExecutorConfig(action_dt_s=0.05))
    assert executor.due(0, Trigger.PERIOD) and not executor.due(0, Trigger.INPUTS_COMPLETE)
    executor.accept(CHUNK, 0, 0, "p")
    assert executor.due(10 * MS, Trigger.PERIOD) and not executor.due(10_000 * MS, Trigger.INPUTS_COMPLETE)


def test_with_a_watermark_a_chunk_is_due_once_that_share_has_executed():
    executor = ChunkExecutor(ExecutorConfig(action_dt_s=0.05, watermark=0.9))
    assert executor.due(0, Trigger.INPUTS_COMPLETE)  # nothing in force yet
    executor.accept(CHUNK, 0, 0, "p")
    # 8 actions of 50 ms: 90% executed at 360 ms, whichever trigger comes
    assert not executor.due(350 * MS, Trigger.INPUTS_COMPLETE) and not executor.due(350 * MS, Trigger.PERIOD)
    assert executor.due(360 * MS, Trigger.INPUTS_COMPLETE) and executor.due(400 * MS, Trigger.PERIOD)


def test_latency_becomes_executed_steps_and_they_are_dropped():
    executor = ChunkExecutor(ExecutorConfig(action_dt_s=0.05))
    chunk = executor.accept(CHUNK, observation_ns=1000 * MS, now_ns=1130 * MS, policy_id="p")
    assert chunk.stale_actions == 2 and chunk.start_ns == 1100 * MS and chunk.arrival_ns == 1130 * MS
    assert chunk.actions[:, 0].tolist() == [2, 3, 4, 5, 6, 7]
    assert executor.action_at(1130 * MS)[0] == 2 and executor.action_at(1150 * MS)[0] == 3
    assert executor.action_at(5000 * MS)[0] == 7  # run out: the last point holds
    late = executor.accept(CHUNK, 0, 10_000 * MS, "p")  # later than the whole chunk: keep the last action
    assert late.actions[:, 0].tolist() == [7] and late.stale_actions == 7


def test_without_dropping_the_chunk_starts_at_its_observation():
    executor = ChunkExecutor(ExecutorConfig(action_dt_s=0.05, drop_stale_actions=False))
    chunk = executor.accept(CHUNK, 0, 130 * MS, "p")
    assert chunk.stale_actions == 0 and chunk.start_ns == 0 and len(chunk.actions) == 8
    assert executor.action_at(130 * MS)[0] == 2  # the time decides what is in force either way


def test_overlap_is_blended_for_the_same_policy_only():
    config = ExecutorConfig(action_dt_s=0.05, blend_decay=1.0)
    executor = ChunkExecutor(config)
    assert executor.action_at(0) is None
    executor.accept(np.zeros((8, 1)), 0, 0, "a")
    blended = executor.accept(np.ones((8, 1)), 100 * MS, 100 * MS, "a")
    # the previous chunk's last 6 actions overlap the new one's first 6; old weight exp(-k)
    np.testing.assert_allclose(blended.actions[:6, 0], 1 - np.exp(-np.arange(6)))
    np.testing.assert_array_equal(blended.actions[6:, 0], 1)
    swapped = executor.accept(np.full((8, 1), 5.0), 200 * MS, 200 * MS, "b")  # after a swap: the new policy's own
    np.testing.assert_array_equal(swapped.actions, 5.0)
    executor.reset()
    assert executor.current is None and executor.action_at(200 * MS) is None


@pytest.mark.parametrize("fields, message", [
    ({"action_dt_s": 0.0}, "action_dt"), ({"action_dt_s": 0.05, "watermark": 1.5}, "watermark"),
    ({"action_dt_s": 0.05, "blend_decay": -1.0}, "blend_decay")])
def test_bad_settings_are_config_errors(fields, message):
    with pytest.raises(ConfigError, match=message):
        ExecutorConfig(**fields)
