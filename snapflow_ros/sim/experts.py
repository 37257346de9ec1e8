"""Scripted experts in target form (what a policy outputs): Meta-World's own for its tasks, and
the two-route expert of the detour task."""

from __future__ import annotations

import numpy as np

from snapflow_ros.sim.robot import ACTION_SCALE, MetaWorldRobot


class Expert:
    """Targets for the robot's current state; reset() at each episode start (picks a route)."""

    def __init__(self, robot: MetaWorldRobot, seed: int) -> None:
        from metaworld.policies import ENV_POLICY_MAP

        self.robot = robot
        self.rng = np.random.default_rng(seed)
        self.scripted = None if robot.task.multimodal else ENV_POLICY_MAP[robot.task.env_name]()
        self.side = 1.0
        self._sides: list[float] = []
        self.waypoint = 0

    def reset(self) -> None:
        # Routes in shuffled pairs: any even number of demonstrations holds as many of each, so the
        # mean of the demonstrated actions at the split is straight at the pillar.
        if not self._sides:
            self._sides = list(self.rng.permutation([-1.0, 1.0]))
        self.side = self._sides.pop()
        self.waypoint = 0

    def target(self) -> np.ndarray:
        hand = self.robot.full_obs[:3]
        if self.scripted is not None:
            observation = self.robot.full_obs.copy()
            # Meta-World's experts read the goal from the observation and steer the hand onto it; this
            # goal puts the fingertips (where success is judged) onto the real one instead.
            observation[-3:] = self.robot.hand_goal
            action = np.clip(self.scripted.get_action(observation), -1.0, 1.0)
            return np.append(hand + action[:3] * ACTION_SCALE, 0.0 if action[3] > 0 else 1.0)
        # Straight at the pillar, a sidestep past it on this episode's side, then on to the goal.
        # The routes part 3 cm before the pillar's edge: up to there nothing observable tells them
        # apart (a state that did would make each observation's actions unimodal), and from there
        # their average (forward at half speed) reaches the pillar within one 8-step chunk.
        goal, start, pillar = self.robot.hand_goal, self.robot.start, self.robot.pillar
        direction = (goal[:2] - start[:2]) / max(np.linalg.norm(goal[:2] - start[:2]), 1e-9)
        normal = np.array([-direction[1], direction[0]])
        approach = pillar - (self.robot.task.pillar_radius + 0.03) * direction
        waypoints = [np.append(approach, start[2]),
                     np.append(pillar + self.side * self.robot.task.detour * normal, start[2]), goal]
        while self.waypoint < len(waypoints) - 1 and np.linalg.norm(hand - waypoints[self.waypoint]) < 0.015:
            self.waypoint += 1
        step = waypoints[self.waypoint] - hand
        step *= min(1.0, ACTION_SCALE / max(np.linalg.norm(step), 1e-9))  # full speed, no overshoot
        return np.append(hand + step, 1.0)
