"""What the node serves: a loaded, warmed-up and checked policy, and the slot that swaps it.

Loading happens off the control path; a policy enters the slot only after a warm-up inference
produced finite actions of the right shape, and the swap is one reference assignment under a
lock, so a chunk is always computed by exactly one complete policy.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from snapflow_ros.errors import CheckpointError, ConfigError, SnapflowError
from snapflow_ros.export.manifest import MANIFEST, Manifest
from snapflow_ros.families.registry import load_policy
from snapflow_ros.files import checkpoint_id, read_config
from snapflow_ros.flow.sampling import default_steps
from snapflow_ros.policy.contract import RawBatch
from snapflow_ros.policy.observation import Observation
from snapflow_ros.runtime.backends import Backend, OnnxRuntimeBackend, TorchBackend

BACKENDS = ("torch", "onnxruntime")


@dataclass
class ServedPolicy:
    backend: Backend
    policy_id: str
    steps: int
    action_dim: int
    cameras: tuple[str, ...]
    load_seconds: float = 0.0
    warmup_ms: float = 0.0

    def predict(self, observation: Observation, seed: int = 0) -> np.ndarray:
        """(chunk_size, action_dim) actions in robot units for one observation."""
        batch = RawBatch(images={c: torch.tensor(observation.images[c])[None] for c in self.cameras},
                         instruction=[observation.instruction],
                         state=torch.as_tensor(observation.state, dtype=torch.float32)[None])
        noise = torch.randn(1, self.backend.chunk_size, self.backend.noise_dim,
                            generator=torch.Generator().manual_seed(seed))
        return self.backend.sample(batch, noise, self.steps)[0].numpy()


def check_policy_source(source: str, backend: str) -> None:
    """The cheap checks of load_served_policy (files present, config readable), for answering a
    parameter change at once; the full load still validates everything."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend '{backend}' unknown; use one of {list(BACKENDS)}")
    if not source:
        return  # the built-in hold-position policy
    if backend == "onnxruntime":
        Manifest.read(Path(source))
    else:
        read_config(Path(source))


def load_served_policy(source: Path, backend: str = "torch", device: str = "cpu",
                       steps: int = 0) -> ServedPolicy:
    """A checkpoint (torch) or an export directory (onnxruntime), warmed up and checked.

    steps = 0 takes the default: 1 for a SnapFlow student, 10 for a teacher (the manifest's for
    an export). Any problem raises a SnapflowError naming it; nothing is half-loaded.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend '{backend}' unknown; use one of {list(BACKENDS)}")
    source = Path(source)
    started = time.perf_counter()
    if backend == "onnxruntime":
        if not (source / MANIFEST).is_file():
            raise CheckpointError(f"{source}: the onnxruntime backend needs an export directory "
                                  f"(snapflow export), {MANIFEST} missing")
        manifest = Manifest.read(source)
        served_backend: Backend = OnnxRuntimeBackend(source)
        policy_id = f"{source.name}@{manifest.source_checkpoint_id.split('@')[-1]}"
        steps_by_default, action_dim = manifest.steps, manifest.action_dim
        processor = served_backend.processor
    else:
        policy = load_policy(source, device)
        served_backend = TorchBackend(policy)
        policy_id = checkpoint_id(source)
        steps_by_default = default_steps(policy)
        action_dim = policy.action_dim
        processor = policy.processor
    served = ServedPolicy(served_backend, policy_id, steps or steps_by_default, action_dim,
                          tuple(processor.cameras), time.perf_counter() - started)
    example = processor.example_batch(1)
    warm = time.perf_counter()
    noise = torch.zeros(1, served_backend.chunk_size, served_backend.noise_dim)
    try:
        actions = served_backend.sample(example, noise, served.steps)
    except SnapflowError:
        raise
    except Exception as error:  # a broken graph or module: report it as a load failure
        raise CheckpointError(f"{source}: warm-up inference failed ({type(error).__name__}: {error})") from None
    served.warmup_ms = (time.perf_counter() - warm) * 1e3
    expected = (1, served_backend.chunk_size, action_dim)
    if tuple(actions.shape) != expected or not torch.isfinite(actions).all():
        raise CheckpointError(f"{source}: warm-up produced {tuple(actions.shape)} actions "
                              f"(finite: {bool(torch.isfinite(actions).all())}), expected {expected}")
    return served


class PolicySlot:
    """The policy in service; replaced whole, never modified."""

    def __init__(self, policy: ServedPolicy | None = None) -> None:
        self._lock = threading.Lock()
        self._policy = policy

    @property
    def policy(self) -> ServedPolicy | None:
        with self._lock:
            return self._policy

    def swap(self, policy: ServedPolicy) -> ServedPolicy | None:
        with self._lock:
            previous, self._policy = self._policy, policy
        return previous
