"""CommittedPrefix: the first actions of a chunk that are already committed (executed while the
chunk is computed). Training-time real-time chunking gives them to the policy clean, at flow time
t = s = 0, in every expert pass; training leaves them out of the loss and sampling keeps them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from snapflow_ros.errors import ConfigError


@dataclass(frozen=True)
class CommittedPrefix:
    """Sample b's first delays[b] actions are committed: clean, at flow time 0, not in the loss."""

    actions: torch.Tensor  # (B, H, D) the clean (normalised) actions
    delays: torch.Tensor   # (B,) long, each < H

    @classmethod
    def sample(cls, actions: torch.Tensor, max_delay: int, generator: torch.Generator) -> CommittedPrefix:
        delays = torch.randint(0, max_delay + 1, (actions.shape[0],), generator=generator)
        return cls(actions, delays.to(actions.device))

    @classmethod
    def first(cls, actions: torch.Tensor | None, delay: int) -> CommittedPrefix | None:
        """The first `delay` of `actions` (B, H, D) committed in every sample; None for delay 0."""
        if delay == 0:
            return None
        if actions is None:
            raise ConfigError(f"a committed prefix of {delay} actions needs the upcoming actions")
        if not 0 < delay < actions.shape[1]:
            raise ConfigError(f"a committed prefix of {delay} actions: must be in [0, {actions.shape[1]}), "
                              "the chunk size")
        return cls(actions, torch.full((actions.shape[0],), delay, dtype=torch.long, device=actions.device))

    @property
    def positions(self) -> torch.Tensor:
        """(B, H) True on the committed actions."""
        horizon = self.actions.shape[1]
        return torch.arange(horizon, device=self.delays.device)[None, :] < self.delays[:, None]

    def times(self, time: torch.Tensor) -> torch.Tensor:
        """(B,) flow times -> (B, H) per action, 0 on the committed ones."""
        return time[:, None].expand(-1, self.actions.shape[1]).masked_fill(self.positions, 0.0)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """x with the committed actions put back (a pass must not move them)."""
        return torch.where(self.positions[..., None], self.actions.to(x.dtype), x)

    def loss_mask(self, mask: torch.Tensor) -> torch.Tensor:
        return mask.bool() & ~self.positions

    def select(self, index: torch.Tensor) -> CommittedPrefix:
        return CommittedPrefix(self.actions[index], self.delays[index])
