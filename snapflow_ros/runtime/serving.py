"""What the node serves: a loaded, warmed-up and checked policy, and the slot that swaps it.

Real-time chunking: predict() takes the actions the robot executes while the chunk is computed
(a Continuation); a policy trained with --max-delay continues the committed ones, a teacher served
with guided RTC inpaints them, any other policy ignores them.

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

from snapflow_ros.errors import CheckpointError, ConfigError, InputError, SnapflowError
from snapflow_ros.export.manifest import MANIFEST, Manifest
from snapflow_ros.families.registry import load_policy
from snapflow_ros.files import checkpoint_id, read_config, trained_max_delay
from snapflow_ros.flow.guidance import RtcGuidance
from snapflow_ros.flow.sampling import default_steps
from snapflow_ros.policy.chunk_executor import ChunkExecutor
from snapflow_ros.policy.contract import Processor, RawBatch
from snapflow_ros.policy.observation import Observation
from snapflow_ros.runtime.backends import Backend, OnnxRuntimeBackend, TorchBackend

BACKENDS = ("torch", "onnxruntime")


@dataclass(frozen=True)
class Continuation:
    """What the robot executes while the next chunk is computed."""

    upcoming: np.ndarray  # (n, action_dim) robot units: the chunk in force from the observation's moment on
    delay: int            # control steps until the new chunk arrives: the first `delay` are committed


@dataclass
class ServedPolicy:
    backend: Backend
    policy_id: str
    steps: int
    action_dim: int
    processor: Processor         # its input path: cameras, and how many tokens a prompt takes
    load_seconds: float = 0.0
    warmup_ms: float = 0.0
    trained_max_delay: int = 0   # --max-delay of its training: continues up to this many committed actions
    guided: bool = False         # inpaints the upcoming actions instead (guided RTC, torch only)

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.processor.cameras)

    @property
    def max_delay(self) -> int:
        """The most committed actions a Continuation may carry (0: continuations are ignored)."""
        return self.backend.chunk_size - 1 if self.guided else self.trained_max_delay

    def predict(self, observation: Observation, seed: int = 0,
                continuation: Continuation | None = None) -> np.ndarray:
        """(chunk_size, action_dim) actions in robot units for one observation; with a
        continuation the chunk continues what executes meanwhile (see the module).
        InputError for a prompt longer than the policy reads: it would act on part of the task."""
        batch = RawBatch(images={c: torch.tensor(observation.images[c])[None] for c in self.cameras},
                         instruction=[observation.instruction],
                         state=torch.as_tensor(observation.state, dtype=torch.float32)[None])
        (tokens,), limit = self.processor.prompt_tokens(batch)
        if tokens > limit:
            raise InputError(f"instruction {observation.instruction!r} takes {tokens} tokens, {self.policy_id} "
                             f"reads {limit}: it would act on a truncated task (shorten the instruction)")
        chunk = self.backend.chunk_size
        noise = torch.randn(1, chunk, self.backend.noise_dim, generator=torch.Generator().manual_seed(seed))
        delay, guidance = 0, None
        if continuation is not None and self.max_delay > 0:
            upcoming = np.asarray(continuation.upcoming, np.float32)[:chunk]
            if upcoming.ndim != 2 or upcoming.shape[1] != self.action_dim or not len(upcoming):
                raise ConfigError(f"upcoming actions must be (n >= 1, {self.action_dim}), got {upcoming.shape}")
            # Past its end the chunk in force holds its last action: that is what executes.
            padded = np.concatenate([upcoming, np.repeat(upcoming[-1:], chunk - len(upcoming), axis=0)])
            batch["actions"] = torch.from_numpy(padded)[None]
            batch["action_mask"] = (torch.arange(chunk) < len(upcoming))[None]
            delay = min(max(continuation.delay, 0), self.max_delay)
            if self.guided:
                guidance, delay = RtcGuidance(delay=delay, execution_horizon=len(upcoming)), 0
        return self.backend.sample(batch, noise, self.steps, delay, guidance)[0].numpy()


def chunk_continuation(chunks: ChunkExecutor, policy: ServedPolicy, observation_ns: int) -> Continuation | None:
    """In rtc chunking, what the chunk in force executes from the observation's moment on, with
    the delay the executor predicts from recent latencies (capped by what the policy continues);
    None in the other modes, before the first chunk, or for a policy that takes no prefix."""
    if chunks.config.chunking != "rtc" or policy.max_delay == 0:
        return None
    upcoming = chunks.upcoming_actions(observation_ns)
    if upcoming is None:
        return None
    return Continuation(upcoming, chunks.predicted_delay_steps(policy.max_delay))


def check_policy_source(source: str, backend: str) -> None:
    """The cheap checks of load_served_policy (files present, config readable), for answering a
    parameter change at once; the full load still validates everything."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend '{backend}' unknown; use one of {list(BACKENDS)}")
    if not source:
        return  # the built-in hold-position policy
    if backend == "onnxruntime":
        Manifest.read(Path(source)).check_files(Path(source))
    else:
        read_config(Path(source))


def load_served_policy(source: Path, backend: str = "torch", device: str = "cpu",
                       steps: int = 0, guided: bool = False) -> ServedPolicy:
    """A checkpoint (torch) or an export directory (onnxruntime), warmed up and checked.

    steps = 0 takes the default: 1 for a SnapFlow student, 10 for a teacher (the manifest's for
    an export). guided: continue chunks by guided RTC (torch only). Any problem raises a
    SnapflowError naming it; nothing is half-loaded.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend '{backend}' unknown; use one of {list(BACKENDS)}")
    if guided and backend != "torch":
        raise ConfigError("guided real-time chunking differentiates through the expert: backend torch only")
    source = Path(source)
    started = time.perf_counter()
    if backend == "onnxruntime":
        if not (source / MANIFEST).is_file():
            raise CheckpointError(f"{source}: the onnxruntime backend needs an export directory "
                                  f"(snapflow export), {MANIFEST} missing")
        manifest = Manifest.read(source)
        manifest.check_files(source)  # a missing graph named as such, not as onnxruntime's NO_SUCHFILE
        try:
            served_backend: Backend = OnnxRuntimeBackend(source)
        except SnapflowError:
            raise
        except Exception as error:  # a corrupt graph: onnxruntime's own error names the file
            raise CheckpointError(f"{source}: onnxruntime could not load the export "
                                  f"({type(error).__name__}: {error})") from None
        policy_id = f"{source.name}@{manifest.source_checkpoint_id.split('@')[-1]}"
        steps_by_default, action_dim, max_delay = manifest.steps, manifest.action_dim, manifest.max_delay
        processor = served_backend.processor
    else:
        policy = load_policy(source, device)
        served_backend = TorchBackend(policy)
        policy_id = checkpoint_id(source)
        steps_by_default = default_steps(policy)
        action_dim, max_delay = policy.action_dim, trained_max_delay(source)
        processor = policy.processor
    served = ServedPolicy(served_backend, policy_id, steps or steps_by_default, action_dim,
                          processor, time.perf_counter() - started,
                          trained_max_delay=max_delay, guided=guided)
    example = processor.example_batch(1)
    warm = time.perf_counter()
    noise = torch.zeros(1, served_backend.chunk_size, served_backend.noise_dim)
    try:
        actions = served_backend.sample(example, noise, served.steps)
        if served.max_delay:  # the continuation path too, so that it cannot first fail on the robot
            observation = Observation(state=example["state"][0].numpy(), stamp_ns=0,
                                      instruction=example["instruction"][0],
                                      images={c: example["images"][c][0].numpy() for c in served.cameras})
            continued = served.predict(observation, continuation=Continuation(actions[0].numpy(), served.max_delay))
            actions = torch.from_numpy(continued)[None]
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
