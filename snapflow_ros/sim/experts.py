"""Scripted experts in target form (what a policy outputs): Meta-World's own for its tasks, and
route experts that follow one of several waypoint routes, chosen at random per episode."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from snapflow_ros.sim.robot import ACTION_SCALE
from snapflow_ros.sim.task import TaskRobot

WAYPOINT_REACHED = 0.015  # metres: close enough to a via point to head for the next one


class MetaWorldExpert:
    """Meta-World's scripted policy of the task's environment: one mode."""

    mode = 0

    def __init__(self, robot: TaskRobot, seed: int) -> None:
        from metaworld.policies import ENV_POLICY_MAP

        self.robot = robot
        self.scripted = ENV_POLICY_MAP[robot.task.env_name]()

    def reset(self) -> None:
        pass

    def target(self) -> np.ndarray:
        hand = self.robot.full_obs[:3]
        observation = self.robot.full_obs.copy()
        # Meta-World's experts read the goal from the observation and steer the hand onto it; this
        # goal puts the fingertips (where success is judged) onto the real one instead.
        observation[-3:] = self.robot.hand_goals[0]
        action = np.clip(self.scripted.get_action(observation), -1.0, 1.0)
        return np.append(hand + action[:3] * ACTION_SCALE, 0.0 if action[3] > 0 else 1.0)


Routes = Callable[[TaskRobot], list[list[np.ndarray]]]


class RouteExpert:
    """Follows route `mode` of `routes(robot)` (hand waypoints, the last one the goal) at full
    speed. Modes come in shuffled rounds of one each, so any multiple of the number of routes
    demonstrates each equally often: the mean of the demonstrated actions is then the mean of
    the modes, the point a mean-seeking one-step sampler lands on."""

    def __init__(self, robot: TaskRobot, seed: int, routes: Routes) -> None:
        self.robot, self.routes = robot, routes
        self.rng = np.random.default_rng(seed)
        self.mode = 0
        self._round: list[int] = []
        self.waypoint = 0

    def reset(self) -> None:
        if not self._round:
            self._round = [int(m) for m in self.rng.permutation(len(self.routes(self.robot)))]
        self.mode = self._round.pop()
        self.waypoint = 0

    def target(self) -> np.ndarray:
        hand = self.robot.full_obs[:3]
        waypoints = self.routes(self.robot)[self.mode]
        while self.waypoint < len(waypoints) - 1 and np.linalg.norm(hand - waypoints[self.waypoint]) < WAYPOINT_REACHED:
            self.waypoint += 1
        step = waypoints[self.waypoint] - hand
        step *= min(1.0, ACTION_SCALE / max(np.linalg.norm(step), 1e-9))  # full speed, no overshoot
        return np.append(hand + step, 1.0)


def detour_routes(robot: TaskRobot) -> list[list[np.ndarray]]:
    """Straight at the pillar, a sidestep past it on the left or the right, then on to the goal.
    The routes part 3 cm before the pillar's edge: up to there nothing observable tells them
    apart (a state that did would make each observation's actions unimodal), and from there
    their average (forward at half speed) reaches the pillar within one 8-step chunk."""
    goal, start, pillar, task = robot.hand_goals[0], robot.start, robot.pillar, robot.task
    direction = (goal[:2] - start[:2]) / max(np.linalg.norm(goal[:2] - start[:2]), 1e-9)
    normal = np.array([-direction[1], direction[0]])
    approach = np.append(pillar - (task.pillar_radius + 0.03) * direction, start[2])
    return [[approach, np.append(pillar + side * task.detour * normal, start[2]), goal] for side in (-1.0, 1.0)]


def goal_routes(robot: TaskRobot) -> list[list[np.ndarray]]:
    """Straight to one of the goals."""
    return [[goal] for goal in robot.hand_goals]
