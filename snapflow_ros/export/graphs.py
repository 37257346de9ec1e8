"""nn.Module views of a FlowPolicy with flat tensor inputs and outputs, as ONNX graphs need."""

from __future__ import annotations

import torch
from torch import nn

from snapflow_ros.flow.sampling import euler_sample
from snapflow_ros.policy.contract import FlowPolicy


class _Graph(nn.Module):
    """Float32 inputs and outputs whatever the policy computes in: an FP16 export is fed and
    read like an FP32 one (casts at the edges). The prefix cache between the two graphs stays
    in the policy's own dtypes (half the memory at FP16, no cast per step)."""

    def __init__(self, policy: FlowPolicy) -> None:
        super().__init__()
        self.policy = policy
        self.dtype = policy.input_dtype

    def cast_in(self, tensors) -> list[torch.Tensor]:
        return cast_floats(tensors, self.dtype)


class PrefixGraph(_Graph):
    """prepared inputs -> the cache tensors (per-layer K/V, masks)."""

    def __init__(self, policy: FlowPolicy, input_names: list[str], cache_names: list[str]) -> None:
        super().__init__(policy)
        self.input_names, self.cache_names = input_names, cache_names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cache = self.policy.embed_prefix(unflatten(dict(zip(self.input_names, self.cast_in(inputs)))))
        tensors = self.policy.cache_tensors(cache)
        return tuple(tensors[name] for name in self.cache_names)


class ExpertGraph(_Graph):
    """(x, t, s, cache tensors) -> velocity: one expert pass."""

    def __init__(self, policy: FlowPolicy, cache_names: list[str]) -> None:
        super().__init__(policy)
        self.cache_names = cache_names

    def forward(self, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor, *cache: torch.Tensor) -> torch.Tensor:
        x, t, s = self.cast_in((x, t, s))
        tensors = self.policy.cache_from_tensors(dict(zip(self.cache_names, cache)))
        return self.policy.velocity(x, t, s, tensors).float()


class MonolithicGraph(_Graph):
    """(prepared inputs, noise) -> normalised actions after `steps` Euler steps, in one graph
    (the baseline the decomposed export is compared with)."""

    def __init__(self, policy: FlowPolicy, input_names: list[str], steps: int) -> None:
        super().__init__(policy)
        self.input_names, self.steps = input_names, steps

    def forward(self, *inputs_and_noise: torch.Tensor) -> torch.Tensor:
        *inputs, noise = self.cast_in(inputs_and_noise)
        cache = self.policy.embed_prefix(unflatten(dict(zip(self.input_names, inputs))))
        return euler_sample(self.policy, cache, noise, self.steps).float()


def cast_floats(tensors, dtype: torch.dtype) -> list[torch.Tensor]:
    return [t.to(dtype) if t.is_floating_point() else t for t in tensors]


def flatten(inputs: dict) -> dict[str, torch.Tensor]:
    """Prepared inputs as named tensors: lists (one tensor per camera) become name.0, name.1, ...;
    training targets and non-tensor entries are dropped."""
    flat: dict[str, torch.Tensor] = {}
    for name, value in inputs.items():
        if name in ("actions", "action_mask") or value is None:
            continue
        if isinstance(value, (list, tuple)):
            flat |= {f"{name}.{i}": v for i, v in enumerate(value)}
        elif isinstance(value, torch.Tensor):
            flat[name] = value
    return flat


def unflatten(flat: dict[str, torch.Tensor]) -> dict:
    inputs: dict = {}
    for name, value in flat.items():
        base, _, index = name.partition(".")
        if index:
            inputs.setdefault(base, []).append(value)
        else:
            inputs[name] = value
    return inputs
