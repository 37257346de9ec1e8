"""Episodes on the simulated robot: expert demonstrations and closed-loop policy runs.

A policy runs the way the node serves it (ServedPolicy.predict on an Observation): every
`replan_every` environment steps it is asked for a chunk of targets from the current camera
image, state and instruction, and the robot executes the first `replan_every` of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from snapflow_distill.data import InMemoryChunkDataset
from snapflow_ros.policy.observation import Observation
from snapflow_ros.sim.experts import Expert
from snapflow_ros.sim.robot import MetaWorldRobot, SimObservation
from snapflow_ros.sim.tasks import SimTask

CAMERA = "top"


def observation(sim: SimObservation, task: SimTask, stamp_ns: int = 0) -> Observation:
    return Observation(state=sim.state.astype(np.float32), stamp_ns=stamp_ns, images={CAMERA: sim.image},
                       instruction=task.instruction)


def collect_demos(task: SimTask, episodes: int, seed: int, chunk_size: int, image_size: int = 64,
                  progress: Callable[[int], None] | None = None) -> InMemoryChunkDataset:
    """Expert episodes as samples: each step's observation with the next chunk_size expert targets
    (masked past the episode end). Only successful episodes are kept."""
    robot = MetaWorldRobot(task, seed=seed, image_size=image_size)
    expert = Expert(robot, seed=seed + 1)
    images, states, actions, masks = [], [], [], []
    try:
        for episode in range(episodes):
            sim, expert_done = robot.reset(), None
            expert.reset()
            frames, targets = [], []
            while expert_done is None or not expert_done.done:
                target = expert.target()
                frames.append(sim)
                targets.append(target)
                expert_done = robot.step(target)
                sim = expert_done.observation
            if expert_done.success:
                targets = np.stack(targets)
                for k, frame in enumerate(frames):
                    window = np.arange(k, k + chunk_size)
                    images.append(frame.image)
                    states.append(frame.state)
                    actions.append(targets[np.minimum(window, len(targets) - 1)])
                    masks.append(window < len(targets))
            if progress:
                progress(episode + 1)
    finally:
        robot.close()
    return InMemoryChunkDataset(
        images={CAMERA: torch.as_tensor(np.stack(images))}, instructions=[task.instruction] * len(states),
        states=torch.as_tensor(np.stack(states), dtype=torch.float32),
        actions=torch.as_tensor(np.stack(actions), dtype=torch.float32), action_masks=torch.as_tensor(np.stack(masks)))


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
        for target in chunk[:replan_every]:
            outcome = robot.step(target)
            if outcome.done:
                return EpisodeResult(outcome.success, outcome.failure, robot.steps, latencies)
        sim = outcome.observation
