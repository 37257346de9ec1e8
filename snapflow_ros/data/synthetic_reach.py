"""The synthetic reaching scene: a hand must reach a goal around an obstacle at the midpoint,
and a two-way expert passes it on the left or on the right at random. Both routes are correct;
their average drives through the obstacle, which is what one naive Euler step of a flow policy
produces. Observation: a top-view image (hand red, goal green, obstacle blue) and the
instruction. The demo bags (snapflow_ros.bags.demo_bags) record this scene; the in-memory
dataset of it is snapflow_distill.synthetic."""

from __future__ import annotations

import torch

INSTRUCTION = "reach the green target"
DETOUR = 0.6  # sideways offset of the two routes at the obstacle, in workspace units


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
