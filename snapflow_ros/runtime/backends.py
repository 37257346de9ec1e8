"""Two backends behind one interface: prepare -> prefix (once per chunk) -> step (per Euler step).

    backend = TorchBackend(load_policy(ckpt))  or  OnnxRuntimeBackend(export_dir)
    actions = backend.sample(raw_batch, noise, steps)    # (B, chunk, action_dim), robot units

Real-time chunking: with `delay` d > 0 the batch carries the upcoming actions (raw_batch
"actions", robot units) and the first d are the committed prefix (a policy trained with
--max-delay continues them); with `guidance` the torch backend inpaints them (guided RTC).

The ONNX Runtime backend keeps the prefix cache as OrtValues on the execution device and binds
them to every expert run (IO binding): the cache never crosses host memory between steps. On a
GPU it prefers TensorRT, then CUDA (execution_providers() says with which options), else the CPU.
"""

from __future__ import annotations

import ctypes.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from snapflow_ros.errors import CheckpointError, ConfigError
from snapflow_ros.export.graphs import flatten, unflatten
from snapflow_ros.export.manifest import Manifest
from snapflow_ros.families.registry import family
from snapflow_ros.flow.guidance import RtcGuidance, guided_euler_integrate
from snapflow_ros.flow.prefix import CommittedPrefix
from snapflow_ros.flow.sampling import euler_integrate
from snapflow_ros.policy.contract import FlowPolicy, RawBatch

TENSORRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
PROVIDER_PREFERENCE = (TENSORRT, CUDA, CPU)
ENGINE_CACHE = "tensorrt_cache"  # under the export directory unless a path is given

# numpy dtypes of the ONNX tensor types the expert's float inputs can have.
_INPUT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def execution_providers(available: Sequence[str], precision: str, device_id: int = 0,
                        engine_cache: Path | None = None, requested: Sequence[str] | None = None,
                        options: Mapping[str, Mapping[str, Any]] | None = None) -> list[tuple[str, dict[str, str]]]:
    """The providers to create sessions with, in order of preference, each with its options.

    `available`: what this onnxruntime can run (see usable_providers); `precision`: the export's
    manifest precision; `requested`: an explicit choice (every name must be available), else
    TensorRT > CUDA > CPU among the available; `options`: per provider, merged over the defaults.
    """
    if requested:
        missing = [name for name in requested if name not in available]
        if missing:
            raise ConfigError(f"execution providers {missing} are not available in this onnxruntime "
                              f"(available: {list(available)}); GPU providers need onnxruntime-gpu "
                              "(SNAPFLOW_ORT=gpu scripts/setup.sh)")
        names = list(requested)
    else:
        names = [name for name in PROVIDER_PREFERENCE if name in available]
    defaults: dict[str, dict[str, str]] = {
        TENSORRT: {
            "device_id": str(device_id),
            # An fp16 export runs its fp32 remainder in fp16 too; an fp32 one keeps fp32 parity.
            "trt_fp16_enable": str(precision == "fp16"),
            # Engines take minutes to build for a VLM: keep them (and the tactic timings) on disk
            # so that a restarted robot loads them instead of rebuilding.
            "trt_engine_cache_enable": "True",
            "trt_timing_cache_enable": "True",
        },
        CUDA: {"device_id": str(device_id)},
    }
    if engine_cache is not None:
        defaults[TENSORRT]["trt_engine_cache_path"] = str(engine_cache)
        defaults[TENSORRT]["trt_timing_cache_path"] = str(engine_cache)
    extra = options or {}
    unknown = sorted(set(extra) - set(names))
    if unknown:
        raise ConfigError(f"provider options given for {unknown}, which are not among the providers {names}")
    return [(name, defaults.get(name, {}) | {k: str(v) for k, v in extra.get(name, {}).items()})
            for name in names]


def usable_providers(available: Sequence[str]) -> list[str]:
    """onnxruntime's available providers less TensorRT when its libraries cannot be loaded.

    onnxruntime-gpu lists TensorRT whether or not TensorRT is installed; choosing it then fails
    at every session start (an error, then a fallback to CUDA) instead of once here.
    """
    return [name for name in available if name != TENSORRT or ctypes.util.find_library("nvinfer")]


def _step_input_dtypes(session: Any) -> dict[str, type]:
    """numpy dtypes of the expert graph's x, t and s (float32 unless an export chose otherwise)."""
    dtypes = {}
    for arg in session.get_inputs():
        if arg.name in ("x", "t", "s"):
            if arg.type not in _INPUT_DTYPES:
                raise CheckpointError(f"expert graph input {arg.name!r} is a {arg.type}; the onnxruntime "
                                      f"backend binds {sorted(_INPUT_DTYPES)}")
            dtypes[arg.name] = _INPUT_DTYPES[arg.type]
    return dtypes


class Backend(Protocol):
    name: str
    chunk_size: int
    noise_dim: int

    def prepare(self, batch: RawBatch) -> dict[str, torch.Tensor]: ...

    def prefix(self, inputs: dict[str, torch.Tensor]) -> Any: ...

    def step(self, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor, cache: Any) -> torch.Tensor: ...

    def sample(self, batch: RawBatch, noise: torch.Tensor, steps: int, delay: int = 0,
               guidance: RtcGuidance | None = None) -> torch.Tensor: ...


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
    def step(self, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor, cache: Any) -> torch.Tensor:
        x = x.to(self.policy.device)
        return self.policy.velocity(x, t.to(x), s.to(x), cache)

    @torch.no_grad()
    def sample(self, batch: RawBatch, noise: torch.Tensor, steps: int, delay: int = 0,
               guidance: RtcGuidance | None = None) -> torch.Tensor:
        policy = self.policy
        inputs = policy.prepare(batch)
        cache = policy.embed_prefix(inputs)
        noise = noise.to(policy.device)

        def velocity(x: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            return policy.velocity(x, t, s, cache)

        if guidance is not None:
            actions = guided_euler_integrate(velocity, noise, steps, _upcoming(inputs, batch), guidance)
        else:
            actions = euler_integrate(velocity, noise, steps, _committed(inputs, delay))
        return policy.unnormalize_actions(actions).cpu()


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, export_dir: Path, providers: Sequence[str] | None = None, threads: int = 0,
                 device_id: int = 0, provider_options: Mapping[str, Mapping[str, Any]] | None = None,
                 engine_cache: Path | None = None) -> None:
        """`providers`: an explicit list (each must be available and must start), else the best
        available; `provider_options`: per provider, over execution_providers()' defaults;
        `engine_cache`: TensorRT's engine directory (default: <export_dir>/tensorrt_cache)."""
        # CUDA/cuDNN come from the nvidia-* wheels that torch, imported above, already loaded:
        # onnxruntime-gpu finds them in the process, with no LD_LIBRARY_PATH or preload.
        import onnxruntime as ort

        self.export_dir = Path(export_dir)
        self.manifest = Manifest.read(self.export_dir)
        self.processor = family(self.manifest.family).load_processor(self.export_dir / self.manifest.processor)
        self.chunk_size, self.noise_dim = self.manifest.chunk_size, self.manifest.noise_dim
        self._requested = execution_providers(
            usable_providers(ort.get_available_providers()), self.manifest.precision, device_id=device_id,
            engine_cache=engine_cache or self.export_dir / ENGINE_CACHE, requested=providers,
            options=provider_options)
        self._explicit = bool(providers)
        self.device_id = device_id
        tensorrt = dict(self._requested).get(TENSORRT)
        if tensorrt:
            Path(tensorrt["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
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
        # What the sessions run on (onnxruntime falls back when a provider fails to start).
        self.providers: list[str] = self.prefix_session.get_providers()
        self.device_type = "cuda" if self.providers[0] in (TENSORRT, CUDA) else "cpu"  # TensorRT's memory is CUDA's
        self.cache_names = [spec.name for spec in self.manifest.cache]
        self._step_dtypes = _step_input_dtypes(self.expert_session)
        # The graph decides, not the manifest: exports from before per-action time take t as (B,).
        self.per_action_time = any(arg.name == "t" and len(arg.shape) == 2 for arg in self.expert_session.get_inputs())

    def session(self, role: str) -> Any:
        import onnxruntime as ort

        if role not in self._sessions:
            path = self.export_dir / self.manifest.graphs[role]
            session = ort.InferenceSession(str(path), self._options,
                                           providers=[name for name, _ in self._requested],
                                           provider_options=[opts for _, opts in self._requested])
            started = session.get_providers()
            if self._explicit and not all(name in started for name, _ in self._requested):
                raise ConfigError(f"{path.name}: asked for {[n for n, _ in self._requested]}, onnxruntime "
                                  f"started {started} (its log above says why)")
            self._sessions[role] = session
        return self._sessions[role]

    def prepare(self, batch: RawBatch) -> dict[str, torch.Tensor]:
        return flatten(self.processor.prepare(batch, torch.device("cpu")))

    def prefix(self, inputs: dict[str, torch.Tensor]) -> list[Any]:
        """The cache as OrtValues on the execution device."""
        binding = self.prefix_session.io_binding()
        for spec in self.manifest.prefix_inputs:
            binding.bind_cpu_input(spec.name, inputs[spec.name].cpu().numpy())
        for name in self.cache_names:
            binding.bind_output(name, self.device_type, self.device_id)
        self.prefix_session.run_with_iobinding(binding)
        # The expert session reads the cache on its own CUDA stream: the cache must be complete.
        binding.synchronize_outputs()
        return binding.get_outputs()

    def step(self, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor, cache: list[Any]) -> torch.Tensor:
        binding = self.expert_session.io_binding()
        # Host arrays of the graph's own input types; on a GPU onnxruntime copies them to the
        # device of the session (a few KB per step), next to the cache that stays there.
        dtypes = self._step_dtypes
        binding.bind_cpu_input("x", np.ascontiguousarray(x.detach().cpu().numpy(), dtype=dtypes["x"]))
        for name, time in (("t", t), ("s", s)):
            binding.bind_cpu_input(name, np.ascontiguousarray(self._flow_time(time, x), dtype=dtypes[name]))
        for name, value in zip(self.cache_names, cache):
            binding.bind_ortvalue_input(name, value)  # stays on the device
        binding.bind_output("velocity", "cpu")
        self.expert_session.run_with_iobinding(binding)
        return torch.from_numpy(binding.copy_outputs_to_cpu()[0])

    def _flow_time(self, time: torch.Tensor, x: torch.Tensor) -> np.ndarray:
        """A flow time as the expert graph takes it: (B, H) per action for an export with
        per-action time (a (B,) time is the same at every action), (B,) for an older one."""
        if self.per_action_time:
            return (time[:, None].expand(-1, x.shape[1]) if time.ndim == 1 else time).cpu().numpy()
        if time.ndim != 1:
            raise ConfigError(f"{self.export_dir}: this export's expert takes one flow time per chunk (exported "
                              "before per-action time); export it again to serve a committed prefix")
        return time.cpu().numpy()

    def sample(self, batch: RawBatch, noise: torch.Tensor, steps: int, delay: int = 0,
               guidance: RtcGuidance | None = None) -> torch.Tensor:
        """The Euler loop of snapflow_ros.flow.sampling, each step an expert-graph run."""
        if guidance is not None:
            raise ConfigError("guided real-time chunking differentiates through the expert: the torch backend "
                              "runs it, an ONNX graph has no backward pass")
        inputs = self.processor.prepare(batch, torch.device("cpu"))
        cache = self.prefix(flatten(inputs))
        actions = euler_integrate(lambda x, t, s: self.step(x, t, s, cache), noise.cpu().float(), steps,
                                  _committed(inputs, delay))
        return self.processor.unnormalize_actions(actions)

    def sample_monolithic(self, batch: RawBatch, noise: torch.Tensor, steps: int) -> torch.Tensor:
        """prefix + `steps` Euler steps in the single monolithic_<steps> graph (if exported)."""
        session = self.session(f"monolithic_{steps}")
        inputs = self.prepare(batch)
        feeds = {spec.name: inputs[spec.name].cpu().numpy() for spec in self.manifest.prefix_inputs}
        feeds["noise"] = noise.cpu().numpy().astype(np.float32)
        (actions,) = session.run(["actions"], feeds)
        return self.processor.unnormalize_actions(torch.from_numpy(actions))


def _committed(inputs: dict[str, Any], delay: int) -> CommittedPrefix | None:
    """The first `delay` upcoming actions (prepared: normalised, padded to noise_dim)."""
    return CommittedPrefix.first(inputs.get("actions"), delay)


def _upcoming(inputs: dict[str, Any], batch: RawBatch) -> torch.Tensor:
    """The upcoming actions guided RTC inpaints (normalised), up to the last one given."""
    if "actions" not in inputs:
        raise ConfigError("guided real-time chunking needs the upcoming actions in the batch")
    mask = batch.get("action_mask")
    available = inputs["actions"].shape[1] if mask is None else int(torch.as_tensor(mask).sum(dim=1).min())
    return inputs["actions"][:, :available]
