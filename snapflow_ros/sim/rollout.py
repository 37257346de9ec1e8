"""Closed-loop policy episodes on the simulated robot (demonstrations are recorded through ROS:
snapflow_ros.ros.sim_recording).

A policy runs the way the node serves it: ServedPolicy.predict on an Observation, and the node's
ChunkExecutor deciding when a chunk is due and which action is in force at every step. Time is
simulated (one action step per environment step); `latency_s` is a simulated inference delay,
during which the robot goes on executing the chunk in force, as it does on a robot.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from snapflow_ros.policy.chunk_executor import ChunkExecutor, ExecutorConfig, Trigger
from snapflow_ros.policy.observation import Observation
from snapflow_ros.sim.robot import MetaWorldRobot, SimObservation
from snapflow_ros.sim.tasks import SimTask

CAMERA = "top"


def observation(sim: SimObservation, task: SimTask, stamp_ns: int = 0) -> Observation:
    return Observation(state=sim.state.astype(np.float32), stamp_ns=stamp_ns, images={CAMERA: sim.image},
                       instruction=task.instruction)


@dataclass
class EpisodeResult:
    success: bool
    failure: str
    steps: int
    latencies_ms: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class _Request:
    actions: np.ndarray
    observation_ns: int
    arrival_ns: int


def run_episode(robot: MetaWorldRobot, policy, executor: ExecutorConfig, period_steps: int, seed: int,
                latency_s: float = 0.0) -> EpisodeResult:
    """One closed-loop episode of `policy` (a ServedPolicy) from a fresh reset. The chunk timer
    fires every `period_steps` steps; with a watermark, the inputs are complete at every step."""
    chunks = ChunkExecutor(executor)
    dt_ns, latency_ns = executor.action_dt_ns, round(latency_s * 1e9)
    sim = robot.reset()
    latencies: list[float] = []
    pending: _Request | None = None
    period_missed = False  # a timer tick during inference: the node's worker serves it right after
    step = 0
    while True:
        now = step * dt_ns
        if pending is not None and now >= pending.arrival_ns:
            chunks.accept(pending.actions, pending.observation_ns, pending.arrival_ns, policy.policy_id)
            pending = None
        period_missed |= step % period_steps == 0
        trigger = Trigger.PERIOD if period_missed else Trigger.INPUTS_COMPLETE
        if pending is None:
            period_missed = False
        if pending is None and chunks.due(now, trigger):  # one inference at a time, as on the node's worker
            started = time.perf_counter()
            actions = policy.predict(observation(sim, robot.task, now), seed=seed * 100_003 + len(latencies))
            latencies.append((time.perf_counter() - started) * 1e3)
            pending = _Request(actions, now, now + latency_ns)
            if latency_ns == 0:
                chunks.accept(actions, now, now, policy.policy_id)
                pending = None
        target = chunks.action_at(now)
        if target is None:  # no chunk yet (the first is still being computed): stay where it is
            target = sim.state
        # A frame only where the next step may compute a chunk (rendering is most of a step's cost).
        render = executor.watermark > 0 or (step + 1) % period_steps == 0
        outcome = robot.step(target, render=render)
        step += 1
        if outcome.done:
            return EpisodeResult(outcome.success, outcome.failure, robot.steps, latencies)
        sim = outcome.observation
