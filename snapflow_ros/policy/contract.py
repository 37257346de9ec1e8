"""The FlowPolicy contract every teacher family implements (built-in, pi0, pi0.5, SmolVLA).

    inputs = policy.prepare(raw_batch)         # the ONE preprocessing path (normalisation, tokens)
    cache  = policy.embed_prefix(inputs)        # observation prefix, computed once per chunk
    v      = policy.velocity(x, t, s, cache)    # one expert pass: average velocity from t to s
    a      = policy.unnormalize_actions(x0)

Sampling (snapflow_ros.flow.sampling) and SnapFlow (snapflow_distill) only use these.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Protocol, TypedDict

import torch
from torch import nn

# Instructions of several lengths for real-shaped example observations (export, validate,
# warm-up): a graph traced with one prompt length must serve the others.
EXAMPLE_INSTRUCTIONS = ("pick up the red block", "open the drawer",
                        "put the white mug on the left plate, then close the top drawer of the cabinet")


def example_instruction(seed: int) -> str:
    return EXAMPLE_INSTRUCTIONS[seed % len(EXAMPLE_INSTRUCTIONS)]


class RawBatch(TypedDict, total=False):
    """Unnormalised inputs, batched. Training batches also carry actions."""

    images: dict[str, torch.Tensor]  # camera -> (B, H, W, 3) uint8 RGB
    instruction: list[str]           # B task strings
    state: torch.Tensor              # (B, state_dim) float
    actions: torch.Tensor            # (B, chunk_size, action_dim) float, training only
    action_mask: torch.Tensor        # (B, chunk_size) bool, False on padding past episode end


class PrefixCache(Protocol):
    """What embed_prefix returns: per-layer keys/values (or similar) for the expert to attend to."""

    @property
    def batch_size(self) -> int: ...

    def select(self, index: torch.Tensor) -> PrefixCache:
        """The cache of the samples at `index` (a 1-D long tensor)."""
        ...


class Processor(Protocol):
    """Preprocessing and postprocessing of a policy, separable from its weights."""

    cameras: tuple[str, ...]

    def example_batch(self, batch_size: int = 1, seed: int = 0) -> RawBatch:
        """A real-shaped random observation batch (cameras, example_instruction(seed), state)."""
        ...

    def prepare(self, batch: RawBatch, device: torch.device) -> dict[str, Any]: ...

    def prompt_tokens(self, batch: RawBatch) -> tuple[list[int], int]:
        """Tokens each sample's prompt takes before truncation, and the most the policy reads;
        prepare() truncates (as training on a dataset does), serving refuses what does not fit."""
        ...

    def unnormalize_actions(self, actions: torch.Tensor) -> torch.Tensor: ...

    def normalization_stats(self) -> dict[str, dict[str, list[float]]]: ...

    def save(self, directory: Path) -> None: ...


class FlowPolicy(nn.Module, ABC):
    """A flow-matching action policy with a target-time input s (SnapFlow's F(x, t, s | c))."""

    family: str
    chunk_size: int
    action_dim: int         # real action size; losses and outputs use the first action_dim dims
    target_time: nn.Module  # phi(s), zero-initialised last layer (snapflow_ros.flow.target_time)
    gradient_checkpointing: bool = False  # recompute expert activations in backward (training)
    checkpoints_layers: bool = False      # velocity() then recomputes layer by layer itself

    @property
    def noise_dim(self) -> int:
        """Width of x in velocity(): action_dim, or the padded width of LeRobot models (32)."""
        return self.action_dim

    @abstractmethod
    def prepare(self, batch: RawBatch) -> dict[str, Any]:
        """Normalised model inputs (and targets when `batch` has actions) on the policy's device."""

    @abstractmethod
    def embed_prefix(self, inputs: dict[str, Any]) -> PrefixCache:
        """Encode the observation (images, language, state) once."""

    @abstractmethod
    def velocity(self, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor,
                 cache: PrefixCache) -> torch.Tensor:
        """(B, chunk_size, noise_dim) average velocity carrying x from time t to time s."""

    @abstractmethod
    def unnormalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """(B, chunk_size, noise_dim) normalised -> (B, chunk_size, action_dim) robot units."""

    @abstractmethod
    def expert_parameters(self) -> list[nn.Parameter]:
        """What SnapFlow trains: the action expert, its projections, the time MLPs and phi.
        Everything else (the vision-language backbone) stays frozen."""

    @abstractmethod
    def cache_tensors(self, cache: PrefixCache) -> dict[str, torch.Tensor]:
        """The cache as named tensors (the outputs of an exported prefix graph)."""

    @abstractmethod
    def cache_from_tensors(self, tensors: dict[str, torch.Tensor]) -> PrefixCache:
        """Inverse of cache_tensors (the cache inputs of an exported expert graph)."""

    def example_batch(self, batch_size: int = 1, seed: int = 0) -> RawBatch:
        """A real-shaped random observation batch (cameras, instruction, state) for export/validation."""
        return self.processor.example_batch(batch_size, seed)

    @abstractmethod
    def save_pretrained(self, directory: Path) -> None:
        """Write the checkpoint files into an existing empty directory (callers make it atomic)."""

    @classmethod
    @abstractmethod
    def from_pretrained(cls, directory: Path, device: str | torch.device = "cpu") -> FlowPolicy:
        """Load strictly: a missing or mismatched tensor raises CheckpointError."""

    @property
    @abstractmethod
    def processor(self) -> Processor:
        """The input/output path on its own (no weights): what prepare/unnormalize_actions use."""

    @classmethod
    @abstractmethod
    def load_processor(cls, directory: Path) -> Processor:
        """A processor saved by `processor.save(directory)`, without loading any model."""

    @property
    def input_dtype(self) -> torch.dtype:
        """dtype of the float tensors an exported graph feeds the policy (x, t, s, images)."""
        return next(self.parameters()).dtype

    def to_precision(self, dtype: torch.dtype) -> None:
        """Cast for low-precision inference (export --fp16); families keep their float32 islands."""
        self.to(dtype)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
