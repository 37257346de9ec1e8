"""Two backends behind one interface: prepare -> prefix (once per chunk) -> step (per Euler step).

    backend = TorchBackend(load_policy(ckpt))  or  OnnxRuntimeBackend(export_dir)
    actions = backend.sample(raw_batch, noise, steps)    # (B, chunk, action_dim), robot units

The ONNX Runtime backend keeps the prefix cache as OrtValues on the execution device and binds
them to every expert run (IO binding): the cache never crosses host memory between steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from snapflow_ros.export.graphs import flatten, unflatten
from snapflow_ros.export.manifest import Manifest
from snapflow_ros.families.registry import family
from snapflow_ros.flow.sampling import euler_sample
from snapflow_ros.policy.contract import FlowPolicy, RawBatch

PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class Backend(Protocol):
    name: str
    chunk_size: int
    noise_dim: int

    def prepare(self, batch: RawBatch) -> dict[str, torch.Tensor]: ...

    def prefix(self, inputs: dict[str, torch.Tensor]) -> Any: ...

    def step(self, x: torch.Tensor, t: float, s: float, cache: Any) -> torch.Tensor: ...

    def sample(self, batch: RawBatch, noise: torch.Tensor, steps: int) -> torch.Tensor: ...


def euler(step, cache: Any, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """The Euler loop of snapflow_ros.flow.sampling over a backend's step function."""
    dt = -1.0 / steps
    x = noise
    for k in range(steps):
        t = 1.0 + k * dt
        x = x + dt * step(x, t, max(t + dt, 0.0), cache)
    return x


class TorchBackend:
    name = "torch"

    def __init__(self, policy: FlowPolicy) -> None:
        self.policy = policy.eval()
        self.chunk_size, self.noise_dim = policy.chunk_size, policy.noise_dim

    def prepare(self, batch: RawBatch) -> dict[str, torch.Tensor]:
        return flatten(self.policy.prepare(batch))

    @torch.no_grad()
    def prefix(self, inputs: dict[str, torch.Tensor]) -> Any:
        return self.policy.embed_prefix(unflatten(inputs))

    @torch.no_grad()
    def step(self, x: torch.Tensor, t: float, s: float, cache: Any) -> torch.Tensor:
        device = self.policy.device
        full = lambda v: torch.full((x.shape[0],), v, dtype=x.dtype, device=device)  # noqa: E731
        return self.policy.velocity(x.to(device), full(t), full(s), cache)

    @torch.no_grad()
    def sample(self, batch: RawBatch, noise: torch.Tensor, steps: int) -> torch.Tensor:
        cache = self.prefix(self.prepare(batch))
        actions = euler_sample(self.policy, cache, noise.to(self.policy.device), steps)
        return self.policy.unnormalize_actions(actions).cpu()


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, export_dir: Path, providers: list[str] | None = None, threads: int = 0) -> None:
        import onnxruntime as ort

        self.export_dir = Path(export_dir)
        self.manifest = Manifest.read(self.export_dir)
        self.processor = family(self.manifest.family).load_processor(self.export_dir / self.manifest.processor)
        self.chunk_size, self.noise_dim = self.manifest.chunk_size, self.manifest.noise_dim
        available = ort.get_available_providers()
        self.providers = providers or [p for p in PROVIDER_PREFERENCE if p in available]
        options = ort.SessionOptions()
        # No busy-waiting between runs: on a robot (and in interleaved benchmarks) other threads
        # share the cores; spinning ORT workers starve them (seen here: torch 25x slower beside it).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        self._sessions: dict[str, Any] = {}
        self._options = options
        self.prefix_session = self.session("prefix")
        self.expert_session = self.session("expert")
        on_gpu = self.prefix_session.get_providers()[0] != "CPUExecutionProvider"
        self.device_type = "cuda" if on_gpu else "cpu"
        self.cache_names = [spec.name for spec in self.manifest.cache]

    def session(self, role: str) -> Any:
        import onnxruntime as ort

        if role not in self._sessions:
            path = self.export_dir / self.manifest.graphs[role]
            self._sessions[role] = ort.InferenceSession(str(path), self._options, providers=self.providers)
        return self._sessions[role]

    def prepare(self, batch: RawBatch) -> dict[str, torch.Tensor]:
        return flatten(self.processor.prepare(batch, torch.device("cpu")))

    def prefix(self, inputs: dict[str, torch.Tensor]) -> list[Any]:
        """The cache as OrtValues on the execution device."""
        binding = self.prefix_session.io_binding()
        for spec in self.manifest.prefix_inputs:
            binding.bind_cpu_input(spec.name, inputs[spec.name].cpu().numpy())
        for name in self.cache_names:
            binding.bind_output(name, self.device_type)
        self.prefix_session.run_with_iobinding(binding)
        return binding.get_outputs()

    def step(self, x: torch.Tensor, t: float, s: float, cache: list[Any]) -> torch.Tensor:
        binding = self.expert_session.io_binding()
        batch = x.shape[0]
        binding.bind_cpu_input("x", x.detach().cpu().numpy().astype(np.float32))
        binding.bind_cpu_input("t", np.full((batch,), t, dtype=np.float32))
        binding.bind_cpu_input("s", np.full((batch,), s, dtype=np.float32))
        for name, value in zip(self.cache_names, cache):
            binding.bind_ortvalue_input(name, value)  # stays on the device
        binding.bind_output("velocity", "cpu")
        self.expert_session.run_with_iobinding(binding)
        return torch.from_numpy(binding.copy_outputs_to_cpu()[0])

    def sample(self, batch: RawBatch, noise: torch.Tensor, steps: int) -> torch.Tensor:
        cache = self.prefix(self.prepare(batch))
        return self.processor.unnormalize_actions(euler(self.step, cache, noise.cpu().float(), steps))

    def sample_monolithic(self, batch: RawBatch, noise: torch.Tensor, steps: int) -> torch.Tensor:
        """prefix + `steps` Euler steps in the single monolithic_<steps> graph (if exported)."""
        session = self.session(f"monolithic_{steps}")
        inputs = self.prepare(batch)
        feeds = {spec.name: inputs[spec.name].cpu().numpy() for spec in self.manifest.prefix_inputs}
        feeds["noise"] = noise.cpu().numpy().astype(np.float32)
        (actions,) = session.run(["actions"], feeds)
        return self.processor.unnormalize_actions(torch.from_numpy(actions))
