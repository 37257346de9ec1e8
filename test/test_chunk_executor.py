"""ChunkExecutor's rules without ROS: when a chunk is due, latency -> executed steps, stale
actions dropped, overlap blended, the action in force at any time, and for real-time chunking the
predicted delay, the upcoming actions and each mode's handover window."""

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
    config = ExecutorConfig(action_dt_s=0.05, blend_decay=1.0, chunking="blend")
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
    ({"action_dt_s": 0.05, "blend_decay": -1.0}, "blend_decay"),
    ({"action_dt_s": 0.05, "chunking": "smooth"}, "chunking.*'smooth'"),
    ({"action_dt_s": 0.05, "blend_decay": 0.5}, "blend_decay is 0.5.*set chunking: blend"),
    ({"action_dt_s": 0.05, "blend_decay": 0.5, "chunking": "rtc"}, "blend_decay is 0.5.*'rtc'.*set chunking: blend"),
    ({"action_dt_s": 0.05, "chunking": "blend"}, "chunking 'blend' needs blend_decay > 0, got 0.0"),
    ({"action_dt_s": 0.05, "chunking": "rtc", "drop_stale_actions": False}, "'rtc' needs drop_stale_actions"),
    ({"action_dt_s": 0.05, "latency_window": 0}, "latency_window must be >= 1, got 0")])
def test_bad_settings_are_config_errors(fields, message):
    with pytest.raises(ConfigError, match=message):
        ExecutorConfig(**fields)


def test_the_chunking_modes_that_fit_their_settings_are_accepted():
    assert ExecutorConfig(action_dt_s=0.05).chunking == "plain"
    assert ExecutorConfig(action_dt_s=0.05, chunking="blend", blend_decay=0.5).blend_decay == 0.5
    assert ExecutorConfig(action_dt_s=0.05, chunking="rtc", latency_window=1).latency_window == 1


def test_blending_happens_in_blend_mode_only():
    for chunking in ("plain", "rtc"):
        executor = ChunkExecutor(ExecutorConfig(action_dt_s=0.05, chunking=chunking))
        executor.accept(np.zeros((8, 1)), 0, 0, "a")
        np.testing.assert_array_equal(executor.accept(np.ones((8, 1)), 100 * MS, 100 * MS, "a").actions, 1.0)


def accepted_with_latencies(latencies_ms: list[float], **config) -> ChunkExecutor:
    executor = ChunkExecutor(ExecutorConfig(action_dt_s=0.05, **config))
    for i, latency in enumerate(latencies_ms):
        observation = i * 1000 * MS
        executor.accept(CHUNK, observation, observation + round(latency * MS), "p")
    return executor


def test_without_history_the_predicted_delay_is_zero():
    assert ChunkExecutor(ExecutorConfig(action_dt_s=0.05)).predicted_delay_steps(5) == 0


def test_the_predicted_delay_is_the_p95_latency_in_steps_rounded_up_and_capped():
    # 19 chunks of 60 ms and one of 250 ms: p95 (linear) = 60 + 0.05 * 190 = 69.5 ms -> 2 steps of 50 ms
    executor = accepted_with_latencies([60.0] * 19 + [250.0])
    assert executor.predicted_delay_steps(10) == 2
    assert executor.predicted_delay_steps(1) == 1 and executor.predicted_delay_steps(0) == 0  # capped
    assert accepted_with_latencies([100.0] * 5).predicted_delay_steps(10) == 2   # an exact multiple stays
    assert accepted_with_latencies([100.001] * 5).predicted_delay_steps(10) == 3  # a step begun is committed
    assert accepted_with_latencies([700.0] * 3).predicted_delay_steps(4) == 4


def test_the_predicted_delay_uses_the_last_window_of_chunks_and_survives_reset():
    executor = accepted_with_latencies([400.0] * 5 + [40.0] * 3, latency_window=3)
    assert executor.predicted_delay_steps(20) == 1  # the 400 ms chunks left the window
    executor.reset()  # a new episode: the machine is as slow as before
    assert executor.current is None and executor.predicted_delay_steps(20) == 1


def test_upcoming_actions_run_from_the_one_in_force_to_the_end():
    executor = ChunkExecutor(ExecutorConfig(action_dt_s=0.05))
    assert executor.upcoming_actions(0) is None
    executor.accept(CHUNK, 1000 * MS, 1000 * MS, "p")
    assert executor.upcoming_actions(1000 * MS)[:, 0].tolist() == list(range(8))
    assert executor.upcoming_actions(1149 * MS)[:, 0].tolist() == [2, 3, 4, 5, 6, 7]  # action 2 from 1100 ms
    assert executor.upcoming_actions(1150 * MS)[:, 0].tolist() == [3, 4, 5, 6, 7]    # on the grid: its own step
    assert executor.upcoming_actions(9000 * MS)[:, 0].tolist() == [7]                 # run out: the last holds
    assert executor.upcoming_actions(0)[:, 0].tolist() == list(range(8))              # before the start
    executor.upcoming_actions(1000 * MS)[:] = -1  # a copy: the caller cannot change the chunk in force
    assert executor.action_at(1000 * MS)[0] == 0


def test_handover_steps_per_mode():
    plain = ChunkExecutor(ExecutorConfig(action_dt_s=0.05))
    assert plain.accept(CHUNK, 0, 0, "p").handover_steps == 1  # the first chunk
    assert plain.accept(CHUNK, 100 * MS, 230 * MS, "p", committed=3).handover_steps == 1  # committed ignored

    rtc = ChunkExecutor(ExecutorConfig(action_dt_s=0.05, chunking="rtc"))
    assert rtc.accept(CHUNK, 0, 0, "p", committed=3).handover_steps == 1  # first: nothing to continue
    # 130 ms latency: 2 actions stale, 1 of the 3 committed still ahead, then the first generated one
    chunk = rtc.accept(CHUNK, 100 * MS, 230 * MS, "p", committed=3)
    assert chunk.stale_actions == 2 and chunk.handover_steps == 2
    assert rtc.accept(CHUNK, 300 * MS, 400 * MS, "p", committed=2).handover_steps == 1  # all committed stale
    assert rtc.accept(CHUNK, 500 * MS, 560 * MS, "p", committed=4).handover_steps == 4  # 1 stale, 3 kept
    assert rtc.accept(CHUNK, 600 * MS, 600 * MS, "p").handover_steps == 1  # generated without a prefix

    blend = ChunkExecutor(ExecutorConfig(action_dt_s=0.05, chunking="blend", blend_decay=1.0))
    assert blend.accept(np.zeros((8, 1)), 0, 0, "a").handover_steps == 1
    # overlap of 6; old weights exp(-k) = 1, .37, .14, .05, .018 > 0.01, then .0067
    assert blend.accept(np.ones((8, 1)), 100 * MS, 100 * MS, "a").handover_steps == 5
    assert blend.accept(np.ones((8, 1)), 200 * MS, 200 * MS, "b").handover_steps == 1  # another policy: no blend
    strong = ChunkExecutor(ExecutorConfig(action_dt_s=0.05, chunking="blend", blend_decay=10.0))
    strong.accept(np.zeros((8, 1)), 0, 0, "a")
    assert strong.accept(np.ones((8, 1)), 100 * MS, 100 * MS, "a").handover_steps == 1  # at least 1
    slow = ChunkExecutor(ExecutorConfig(action_dt_s=0.05, chunking="blend", blend_decay=0.01))
    slow.accept(np.zeros((8, 1)), 0, 0, "a")
    assert slow.accept(np.ones((8, 1)), 300 * MS, 300 * MS, "a").handover_steps == 2  # the overlap bounds it
