"""Closed-loop policy episodes on the simulated robot (demonstrations are recorded through ROS:
snapflow_ros.ros.sim_recording).

A policy runs the way the node serves it: ServedPolicy.predict on an Observation, and the node's
ChunkExecutor deciding when a chunk is due and which action is in force at every step. Time is
simulated (one action step per environment step); `latency_s` is a simulated inference delay,
during which the robot goes on executing the chunk in force, as it does on a robot. In rtc
chunking the policy is given what executes meanwhile, as the node gives it (chunk_continuation).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from snapflow_ros.policy.chunk_executor import ChunkExecutor, ExecutorConfig, Trigger
from snapflow_ros.policy.handover import handover_jump
from snapflow_ros.policy.observation import Observation
from snapflow_ros.runtime.serving import chunk_continuation
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
    # the jump at each chunk switch (snapflow_ros.policy.handover; robot units)
    boundary_jumps: list[float] = field(default_factory=list)
    mean_jerk: float = 0.0  # mean |third difference of the executed targets| / dt^3 (robot units / s^3)


@dataclass(frozen=True)
class _Request:
    actions: np.ndarray
    observation_ns: int
    arrival_ns: int
    committed: int  # actions of the chunk in force it was told would execute meanwhile


def run_episode(robot: MetaWorldRobot, policy, executor: ExecutorConfig, period_steps: int, seed: int,
                latency_s: float = 0.0) -> EpisodeResult:
    """One closed-loop episode of `policy` (a ServedPolicy) from a fresh reset. The chunk timer
    fires every `period_steps` steps; with a watermark, the inputs are complete at every step."""
    chunks = ChunkExecutor(executor)
    dt_ns, latency_ns = executor.action_dt_ns, round(latency_s * 1e9)
    sim = robot.reset()
    latencies: list[float] = []
    jumps: list[float] = []
    targets: list[np.ndarray] = []
    pending: _Request | None = None
    period_missed = False  # a timer tick during inference: the node's worker serves it right after
    step = 0
    while True:
        now = step * dt_ns
        if pending is not None and now >= pending.arrival_ns:
            _accept(chunks, pending, policy.policy_id, jumps)
            pending = None
        period_missed |= step % period_steps == 0
        trigger = Trigger.PERIOD if period_missed else Trigger.INPUTS_COMPLETE
        if pending is None:
            period_missed = False
        if pending is None and chunks.due(now, trigger):  # one inference at a time, as on the node's worker
            started = time.perf_counter()
            continuation = chunk_continuation(chunks, policy, now)
            actions = policy.predict(observation(sim, robot.task, now), seed=seed * 100_003 + len(latencies),
                                     continuation=continuation)
            latencies.append((time.perf_counter() - started) * 1e3)
            pending = _Request(actions, now, now + latency_ns, continuation.delay if continuation else 0)
        if pending is not None and now >= pending.arrival_ns:  # (at once without latency)
            _accept(chunks, pending, policy.policy_id, jumps)
            pending = None
        target = chunks.action_at(now)
        if target is None:  # no chunk yet (the first is still being computed): stay where it is
            target = sim.state
        targets.append(np.asarray(target, np.float64))
        # A frame only where the next step may compute a chunk (rendering is most of a step's cost):
        # with a watermark any step may, else the next period's or a period missed during inference.
        render = executor.watermark > 0 or period_missed or (step + 1) % period_steps == 0
        outcome = robot.step(target, render=render)
        step += 1
        if outcome.done:
            return EpisodeResult(outcome.success, outcome.failure, robot.steps, latencies, jumps,
                                 mean_jerk(targets, executor.action_dt_s))
        sim = outcome.observation


def _accept(chunks: ChunkExecutor, request: _Request, policy_id: str, jumps: list[float]) -> None:
    """chunks.accept, recording the jump at the switch (none for the first chunk)."""
    previous = chunks.current
    new = chunks.accept(request.actions, request.observation_ns, request.arrival_ns, policy_id,
                        committed=request.committed)
    if previous is not None:
        jumps.append(handover_jump(previous, new, chunks.config.action_dt_ns))


def mean_jerk(targets: list[np.ndarray], dt_s: float) -> float:
    """Mean norm of the third finite difference of the commanded targets over dt^3."""
    if len(targets) < 4:
        return 0.0
    x = np.stack(targets)
    third = x[3:] - 3 * x[2:-1] + 3 * x[1:-2] - x[:-3]
    return float(np.linalg.norm(third, axis=1).mean() / dt_s**3)
