"""The built-in simulated tasks, written as a user's --task-file is (a module-level TASKS list).

Unimodal: reach (a random goal on the table plane), button-press (Meta-World's own expert).
Multi-modal, where the mean of the modes fails by construction (test_sim.py checks it):
- reach-detour: the same start and goal every episode, an invisible pillar halfway between
  them; the expert passes it on the left or on the right at random.
- reach-either: two identical goals mirrored about the line the hand starts on (the hand starts
  at the same place every episode); the expert heads for one of them at random, success at either. The
  mean of the two heads straight between them and reaches neither.
"""

from __future__ import annotations

from functools import partial

from snapflow_ros.sim.experts import MetaWorldExpert, RouteExpert, detour_routes, goal_routes
from snapflow_ros.sim.task import SimTask

TASKS = [
    SimTask("reach", "reach-v3", "reach the goal", max_steps=100, expert=MetaWorldExpert, planar=True),
    SimTask("reach-detour", "reach-v3", "reach the goal around the pillar", max_steps=100,
            expert=partial(RouteExpert, routes=detour_routes), multimodal=True, planar=True,
            goals=((0.0, 0.85),), pillar_radius=0.05, detour=0.16),
    SimTask("reach-either", "reach-v3", "reach one of the two goals", max_steps=60,
            expert=partial(RouteExpert, routes=goal_routes), multimodal=True, planar=True,
            goals=((-0.15, 0.2), (0.15, 0.2)), goals_from_start=True),
    SimTask("button-press", "button-press-topdown-v3", "press the button", max_steps=120, expert=MetaWorldExpert),
]
