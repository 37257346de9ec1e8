"""Closed-loop policy episodes on the simulated robot (demonstrations are recorded through ROS:
snapflow_ros.ros.sim_recording).

A policy runs the way the node serves it (ServedPolicy.predict on an Observation): every
`replan_every` environment steps it is asked for a chunk of targets from the current camera
image, state and instruction, and the robot executes the first `replan_every` of them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
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


def run_episode(robot: MetaWorldRobot, policy, replan_every: int, seed: int) -> EpisodeResult:
    """One closed-loop episode of `policy` (a ServedPolicy) from a fresh reset."""
    sim = robot.reset()
    latencies = []
    calls = 0
    while True:
        started = time.perf_counter()
        chunk = policy.predict(observation(sim, robot.task), seed=seed * 100_003 + calls)
        latencies.append((time.perf_counter() - started) * 1e3)
        calls += 1
        targets = chunk[:replan_every]
        for k, target in enumerate(targets):
            outcome = robot.step(target, render=k == len(targets) - 1)  # a frame only for the next chunk
            if outcome.done:
                return EpisodeResult(outcome.success, outcome.failure, robot.steps, latencies)
        sim = outcome.observation
