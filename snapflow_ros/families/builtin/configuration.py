"""BuiltinVLAConfig: every field of the built-in VLA, validated on construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from snapflow_ros.errors import ConfigError


@dataclass(frozen=True)
class BuiltinVLAConfig:
    cameras: tuple[str, ...] = ("front",)  # camera names, in the order the encoder sees them
    image_size: int = 32                    # images are resized to image_size x image_size
    patch_size: int = 8                     # vision encoder: one token per patch
    max_instruction_tokens: int = 64        # byte tokens of the task instruction (served: longer holds)
    state_dim: int = 4                      # proprioceptive state size
    action_dim: int = 4                     # size of one action
    chunk_size: int = 8                     # actions per chunk
    width: int = 64                         # token width of prefix and expert
    num_heads: int = 4                      # attention heads (width must divide by it)
    num_layers: int = 2                     # prefix layers = expert layers (per-layer K/V)
    mlp_ratio: int = 4                      # feed-forward width / token width
    joint_names: tuple[str, ...] = field(default=())  # names of the action dims (optional)

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, why: str) -> None:
            if not ok:
                raise ConfigError(f"BuiltinVLAConfig.{name}={getattr(self, name)!r}: {why}")

        need(len(self.cameras) >= 1 and len(set(self.cameras)) == len(self.cameras), "cameras",
             "list one or more distinct camera names")
        need(self.image_size % self.patch_size == 0, "image_size", "must be a multiple of patch_size")
        need(self.width % self.num_heads == 0 and self.width % 2 == 0, "width",
             "must be even and divisible by num_heads")
        for name in ("state_dim", "action_dim", "chunk_size", "num_layers", "max_instruction_tokens"):
            need(getattr(self, name) >= 1, name, "must be >= 1")
        need(not self.joint_names or len(self.joint_names) == self.action_dim, "joint_names",
             f"must be empty or name all {self.action_dim} action dims")

    @property
    def tokens_per_camera(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def to_dict(self) -> dict[str, Any]:
        return {"type": "builtin", **asdict(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BuiltinVLAConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known - {"type"}
        if unknown:
            raise ConfigError(f"unknown BuiltinVLAConfig fields {sorted(unknown)}; known: {sorted(known)}")
        tuples = {k: tuple(v) for k, v in values.items() if k in ("cameras", "joint_names")}
        return cls(**{k: v for k, v in values.items() if k in known} | tuples)
