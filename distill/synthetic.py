"""A synthetic reaching task with a two-way (multi-modal) expert, for tests and benchmarks: the
scene of snapflow_ros.data.synthetic_reach as an in-memory dataset (one 32 px camera image, the
instruction and the state (hand, goal)), and the built-in policy shaped for it.
"""

from __future__ import annotations

import torch

from snapflow_ros.data.chunks import InMemoryChunkDataset
from snapflow_ros.data.synthetic_reach import INSTRUCTION, expert_routes, render
from snapflow_ros.families.builtin import BuiltinVLAConfig


def task_config(**overrides) -> BuiltinVLAConfig:
    values = dict(cameras=("front",), image_size=32, patch_size=8, state_dim=4, action_dim=2,
                  chunk_size=8, width=64, num_heads=4, num_layers=2,
                  joint_names=("hand_x", "hand_y"))
    values.update(overrides)
    return BuiltinVLAConfig(**values)


def make_dataset(num_samples: int, seed: int, chunk_size: int = 8) -> tuple[InMemoryChunkDataset, torch.Tensor]:
    """Samples and, beside them, both expert routes per sample (N, 2, chunk_size, 2)."""
    generator = torch.Generator().manual_seed(seed)
    hand = torch.rand(num_samples, 2, generator=generator) * 2 - 1
    goal = torch.rand(num_samples, 2, generator=generator) * 2 - 1
    # Keep hand and goal apart so the obstacle sits between them.
    far = (goal - hand).norm(dim=1) < 0.8
    goal[far] = -hand[far] * 0.9
    routes = expert_routes(hand, goal, chunk_size)
    side = torch.randint(0, 2, (num_samples,), generator=generator)
    actions = routes[torch.arange(num_samples), side]
    dataset = InMemoryChunkDataset(
        images={"front": render(hand, goal)},
        instructions=[INSTRUCTION] * num_samples,
        states=torch.cat([hand, goal], dim=1),
        actions=actions,
    )
    return dataset, routes


def obstacle_hits(actions: torch.Tensor, states: torch.Tensor, radius: float = 0.2) -> torch.Tensor:
    """(N,) bool: the chunk's path passes within `radius` of the obstacle (the hand-goal midpoint)."""
    obstacle = (states[:, :2] + states[:, 2:]) / 2
    return (actions - obstacle[:, None, :]).norm(dim=-1).min(dim=1).values < radius
