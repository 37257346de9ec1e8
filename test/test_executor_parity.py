"""The node and the simulated rollout run one controller: the same (time, observation, inference
latency) sequence through policy_node (real rclpy, sim time) and through sim/rollout.py gives the
same executed actions, with stale actions dropped, overlaps blended and a watermark or a period."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from snapflow_ros.policy.chunk_executor import ExecutorConfig, Trigger
from snapflow_ros.sim.robot import SimObservation, StepOutcome
from snapflow_ros.sim.rollout import run_episode

JOINTS = ["a", "b", "c"]
DT_NS = 50_000_000
BASE_NS = 1_000 * 1_000_000_000  # sim time starts here (0 reads as "no clock yet")
STEPS = 40
LATENCY_S = 0.13  # 2.6 action steps: two stale actions per chunk, the third is due mid-inference


def observed_state(step: int) -> np.ndarray:
    """An open-loop input sequence (what the robot reports does not depend on the commands)."""
    return np.array([math.sin(0.3 * step), math.cos(0.2 * step), 0.01 * step], np.float32)


class ChunkPolicy:
    """Actions that depend on the observation and on their index, so drops and blends show."""

    policy_id, steps, cameras = "fake@1", 1, ()

    def __init__(self, on_inference=None) -> None:
        self.on_inference = on_inference  # the node's test advances its sim clock by the latency here

    def predict(self, observation, seed: int = 0, continuation=None) -> np.ndarray:
        if self.on_inference is not None:
            self.on_inference(observation.stamp_ns)
        k = np.arange(8, dtype=np.float32)[:, None]
        return observation.state[None, :] + 0.1 * k + 0.5 * np.sin(observation.state[None, :] * 3 + k)


class PrefixPolicy(ChunkPolicy):
    """ChunkPolicy that keeps a committed prefix (as a student distilled with --max-delay does)."""

    max_delay = 4

    def __init__(self, on_inference=None) -> None:
        super().__init__(on_inference)
        self.delays: list[int] = []

    def predict(self, observation, seed: int = 0, continuation=None) -> np.ndarray:
        actions = super().predict(observation, seed)
        if continuation is not None:
            self.delays.append(continuation.delay)
            upcoming = np.concatenate([continuation.upcoming, np.repeat(continuation.upcoming[-1:], 8, axis=0)])
            actions[:continuation.delay] = upcoming[:continuation.delay]
        return actions


def policy_for(config: ExecutorConfig, on_inference=None) -> ChunkPolicy:
    return (PrefixPolicy if config.chunking == "rtc" else ChunkPolicy)(on_inference)


@dataclass
class ScriptedRobot:
    """Stands in for MetaWorldRobot: reports observed_state(step), records the commanded targets."""

    task: object = field(default_factory=lambda: type("Task", (), {"instruction": "follow"})())
    targets: list = field(default_factory=list)
    steps: int = 0

    def _observe(self) -> SimObservation:
        return SimObservation(image=np.zeros((0, 0, 3), np.uint8), state=observed_state(self.steps).astype(np.float64))

    def reset(self) -> SimObservation:
        self.steps, self.targets = 0, []
        return self._observe()

    def step(self, target: np.ndarray, render: bool = True) -> StepOutcome:
        self.targets.append(np.asarray(target, np.float64).copy())
        self.steps += 1
        return StepOutcome(self._observe(), False, "timeout" if self.steps >= STEPS else "")


def through_the_rollout(config: ExecutorConfig, period_steps: int) -> np.ndarray:
    robot = ScriptedRobot()
    run_episode(robot, policy_for(config), config, period_steps, seed=0, latency_s=LATENCY_S)
    return np.stack(robot.targets)


def through_the_node(ros, config: ExecutorConfig, period_steps: int) -> np.ndarray:
    from rclpy.parameter import Parameter
    from rclpy.time import Time

    from snapflow_ros.ros.conversions import msg_to_chunk
    from snapflow_ros.ros.policy_node import PolicyNode

    params = {"joint_names": JOINTS, "use_sim_time": True, "action_dt": config.action_dt_s,
              "watermark": config.watermark, "drop_stale_actions": config.drop_stale_actions,
              "blend_decay": config.blend_decay, "chunking": config.chunking, "max_input_age": 1.0,
              "distillation": False, "instruction": "follow"}
    node = ros.node(PolicyNode, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    clock = node.get_clock()

    def set_time(ns: int) -> None:
        clock.set_ros_time_override(Time(nanoseconds=ns, clock_type=clock.clock_type))

    node.slot.swap(policy_for(config, on_inference=lambda stamp_ns: set_time(stamp_ns + round(LATENCY_S * 1e9))))
    published: list[tuple[int, object]] = []  # (arrival on the node clock, chunk)
    node.chunk_publisher.publish = lambda msg: published.append((clock.now().nanoseconds, msg_to_chunk(msg)))
    busy_until = 0
    period_pending = False  # a timer tick while the worker is busy waits for it (ChunkWorker keeps it)
    executed = []
    # The node's worker is never woken here (no spinning, inputs go straight to the assembler):
    # this thread plays the worker, waking it as the timer and the inputs would.
    for step in range(STEPS):
        now = BASE_NS + step * DT_NS
        period_pending |= step % period_steps == 0
        if now >= busy_until:  # one inference at a time: the worker is busy until the chunk is out
            set_time(now)
            node.assembler.update_joints(now, observed_state(step))
            node.serve(Trigger.PERIOD if period_pending else Trigger.INPUTS_COMPLETE)
            period_pending = False
            if published and published[-1][0] > now:
                busy_until = published[-1][0]
        in_force = [chunk for arrival, chunk in published if arrival <= now]
        if not in_force:
            executed.append(observed_state(step).astype(np.float64))
            continue
        chunk = in_force[-1]  # what a trajectory controller executes: the newest chunk that has arrived
        k = math.floor((now - chunk.start_ns) / DT_NS + 1e-9)
        executed.append(chunk.actions[min(max(k, 0), chunk.horizon - 1)].astype(np.float64))
    assert len(published) >= 5
    return np.stack(executed)


@pytest.mark.ros
@pytest.mark.parametrize("config, period_steps", [
    (ExecutorConfig(action_dt_s=0.05, drop_stale_actions=True, blend_decay=0.5, chunking="blend"), 4),  # overlap
    (ExecutorConfig(action_dt_s=0.05, watermark=0.5, drop_stale_actions=True, blend_decay=0.0), 100),
    (ExecutorConfig(action_dt_s=0.05, drop_stale_actions=False, blend_decay=1.0, chunking="blend"), 3),
    # latency (130 ms) longer than the period (100 ms)
    (ExecutorConfig(action_dt_s=0.05, blend_decay=0.5, chunking="blend"), 2),
    (ExecutorConfig(action_dt_s=0.05, chunking="rtc"), 4),  # the committed prefix from the executor
], ids=["period-blend", "watermark", "no-drop", "period-shorter-than-latency", "rtc"])
def test_node_and_rollout_execute_the_same_actions(ros, config, period_steps):
    rollout = through_the_rollout(config, period_steps)
    node = through_the_node(ros, config, period_steps)
    assert rollout.shape == node.shape == (STEPS, 3)
    np.testing.assert_allclose(node, rollout, atol=1e-6)
    # not trivially equal: the actions change from chunk to chunk and step to step
    assert len({tuple(np.round(row, 4)) for row in rollout}) > STEPS // 2


class ContinuingPolicy:
    """Chunks that are samples of one trajectory of absolute time: a new chunk continues the one
    it replaces exactly, whatever the latency, so there is no jump at a switch."""

    policy_id, steps, cameras = "continuing@1", 1, ()

    def predict(self, observation, seed: int = 0, continuation=None) -> np.ndarray:
        times = observation.stamp_ns * 1e-9 + 0.05 * np.arange(8)
        return np.stack([np.sin(times), np.cos(times), times], axis=1).astype(np.float32)


def test_rollout_reports_boundary_jumps_and_jerk():
    config = ExecutorConfig(action_dt_s=0.05)
    jumping = run_episode(ScriptedRobot(), ChunkPolicy(), config, 4, seed=0, latency_s=LATENCY_S)
    smooth = run_episode(ScriptedRobot(), ContinuingPolicy(), config, 4, seed=0, latency_s=LATENCY_S)
    switches = len(jumping.latencies_ms) - 1  # every chunk after the first replaces one
    assert len(jumping.boundary_jumps) == switches > 5 and len(smooth.boundary_jumps) == switches
    assert min(jumping.boundary_jumps) > 0.05  # state-dependent chunks do not continue each other
    assert max(smooth.boundary_jumps) < 1e-5  # (float32 actions)
    assert smooth.mean_jerk < jumping.mean_jerk and np.isfinite(jumping.mean_jerk)


def test_rtc_rollout_gives_the_policy_what_executes_and_measures_the_handover():
    """130 ms of latency: 3 committed actions predicted once a latency is known; the published
    chunk starts where execution is (2 stale actions dropped), so 1 committed action is still
    ahead and the jump is taken at the first generated one."""
    config = ExecutorConfig(action_dt_s=0.05, chunking="rtc")
    policy, robot = PrefixPolicy(), ScriptedRobot()
    rtc = run_episode(robot, policy, config, 4, seed=0, latency_s=LATENCY_S)
    assert policy.delays and set(policy.delays) == {3}  # ceil(130 / 50), under the policy's 4
    plain = run_episode(ScriptedRobot(), ChunkPolicy(), ExecutorConfig(action_dt_s=0.05), 4, seed=0,
                        latency_s=LATENCY_S)
    assert len(rtc.boundary_jumps) == len(plain.boundary_jumps) > 5
    # the executed targets are continuous across the kept prefix: the step into a switch is the old
    # chunk's own, and every jump is measured where the generated actions begin
    assert all(j > 0 for j in rtc.boundary_jumps)


class RenderedFramesOnly(ChunkPolicy):
    """Fails when asked for a chunk from a step whose camera frame was not rendered."""

    def predict(self, observation, seed: int = 0, continuation=None) -> np.ndarray:
        assert observation.images["top"].size > 0, "chunk computed from an unrendered frame"
        return super().predict(observation, seed)


class RenderingRobot(ScriptedRobot):
    def step(self, target: np.ndarray, render: bool = True) -> StepOutcome:
        outcome = super().step(target, render)
        image = np.zeros((1, 1, 3) if render else (0, 0, 3), np.uint8)
        return StepOutcome(SimObservation(image, outcome.observation.state), outcome.success, outcome.failure)

    def reset(self) -> SimObservation:
        return SimObservation(np.zeros((1, 1, 3), np.uint8), super().reset().state)


@pytest.mark.parametrize("period_steps", [2, 4])  # 2: the 130 ms inference outlasts the 100 ms period
def test_rollout_renders_every_frame_a_chunk_is_computed_from(period_steps):
    result = run_episode(RenderingRobot(), RenderedFramesOnly(), ExecutorConfig(action_dt_s=0.05), period_steps,
                         seed=0, latency_s=LATENCY_S)
    assert len(result.latencies_ms) > 5
