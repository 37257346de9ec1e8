"""A synthetic reaching task with a two-way (multi-modal) expert, for tests and benchmarks.

The hand must reach a goal around an obstacle at the midpoint; the expert passes it on the
left or on the right at random. Both are correct; their average drives through the obstacle,
which is exactly what one naive Euler step of a flow policy produces. Observation: one 32 px
camera image (hand red, goal green, obstacle blue), an instruction and the state (hand, goal).
"""

from __future__ import annotations

import torch

from snapflow_distill.data import InMemoryChunkDataset
from snapflow_ros.families.builtin import BuiltinVLAConfig

INSTRUCTION = "reach the green target"
DETOUR = 0.6  # sideways offset of the two routes at the obstacle, in workspace units


def task_config(**overrides) -> BuiltinVLAConfig:
    values = dict(cameras=("front",), image_size=32, patch_size=8, state_dim=4, action_dim=2,
                  chunk_size=8, width=64, num_heads=4, num_layers=2,
                  joint_names=("hand_x", "hand_y"))
    values.update(overrides)
    return BuiltinVLAConfig(**values)


def expert_routes(hand: torch.Tensor, goal: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """(N, 2 routes, chunk_size, 2) waypoints: left and right of the obstacle at the midpoint."""
    direction = goal - hand
    normal = torch.stack([-direction[:, 1], direction[:, 0]], dim=1)
    normal = normal / normal.norm(dim=1, keepdim=True).clamp_min(1e-6)
    u = torch.linspace(1.0 / chunk_size, 1.0, chunk_size)              # progress along the path
    bump = torch.sin(torch.pi * u)                                      # 0 at the ends, 1 midway
    straight = hand[:, None, :] + u[None, :, None] * direction[:, None, :]
    offset = DETOUR * bump[None, :, None] * normal[:, None, :]
    return torch.stack([straight + offset, straight - offset], dim=1)


def render(hand: torch.Tensor, goal: torch.Tensor, size: int = 32) -> torch.Tensor:
    """(N, size, size, 3) uint8 top view of the workspace [-1.5, 1.5]^2."""
    n = hand.shape[0]
    image = torch.full((n, size, size, 3), 30, dtype=torch.uint8)

    def dot(points: torch.Tensor, color: tuple[int, int, int]) -> None:
        pixels = ((points + 1.5) / 3.0 * (size - 1)).round().long().clamp(1, size - 2)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                image[torch.arange(n), pixels[:, 1] + dy, pixels[:, 0] + dx] = torch.tensor(
                    color, dtype=torch.uint8)

    dot((hand + goal) / 2, (40, 40, 230))
    dot(goal, (40, 220, 40))
    dot(hand, (230, 40, 40))
    return image


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
