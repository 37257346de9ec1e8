"""`snapflow export`: a FlowPolicy checkpoint -> prefix.onnx + expert.onnx (+ monolithic graphs)
+ manifest.json + the weight-free processor, written atomically.

Uses the maintained exporter (torch.onnx.export with dynamo=True), static shapes at batch 1, and
checks every graph with onnx.checker.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from snapflow_ros.errors import SnapflowError
from snapflow_ros.export.graphs import ExpertGraph, MonolithicGraph, PrefixGraph, flatten, unflatten
from snapflow_ros.export.manifest import Manifest, TensorSpec
from snapflow_ros.policy.checkpoint import atomic_directory, checkpoint_id, load_policy

DEFAULT_OPSET = 18


class ExportError(SnapflowError):
    """A graph could not be exported or failed onnx.checker."""


def _spec(name: str, tensor: torch.Tensor) -> TensorSpec:
    return TensorSpec(name, list(tensor.shape), str(tensor.dtype).removeprefix("torch."))


def _export(module: torch.nn.Module, args: tuple, path: Path, input_names: list[str],
            output_names: list[str], opset: int) -> None:
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, args, str(path), dynamo=True, opset_version=opset,
                              input_names=input_names, output_names=output_names,
                              external_data=False, verbose=False, optimize=True)
        except Exception as error:
            raise ExportError(f"exporting {path.name} failed: {error}") from error
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as error:
        raise ExportError(f"{path.name} failed onnx.checker: {error}") from error


@torch.no_grad()
def export_policy(checkpoint: Path, output: Path, *, steps: int | None = None, opset: int = DEFAULT_OPSET,
                  fp16: bool = False, monolithic: tuple[int, ...] = ()) -> Manifest:
    """Exports the policy of `checkpoint` into `output` (replaced atomically) and returns its manifest.

    steps: the denoising steps the runtime will run (default: 1 for a SnapFlow student, 10 else).
    monolithic: also export single graphs running prefix + N steps, for each N (benchmarks).
    """
    checkpoint, output = Path(checkpoint), Path(output)
    policy = load_policy(checkpoint).eval()
    steps = steps or (1 if policy.target_time.is_trained() else 10)  # students run one step
    inputs = flatten(policy.prepare(policy.example_batch(1)))
    input_names = list(inputs)
    cache = policy.cache_tensors(policy.embed_prefix(unflatten(inputs)))
    cache_names = list(cache)
    x = torch.randn(1, policy.chunk_size, policy.noise_dim)
    # Distinct tensors for t and s: the exporter would otherwise trace them as one input.
    t, s = torch.ones(1), torch.zeros(1)
    velocity = policy.velocity(x, t, s, policy.cache_from_tensors(cache))
    graphs = {"prefix": "prefix.onnx", "expert": "expert.onnx"}
    with atomic_directory(output) as tmp:
        (tmp / "processor").mkdir()
        policy.processor.save(tmp / "processor")  # float32 statistics, before any .half()
        if fp16:  # the graphs cast float inputs to float16 and results back to float32
            policy.half()
        _export(PrefixGraph(policy, input_names, cache_names), tuple(inputs.values()),
                tmp / "prefix.onnx", input_names, cache_names, opset)
        _export(ExpertGraph(policy, cache_names), (x, t, s, *cache.values()), tmp / "expert.onnx",
                ["x", "t", "s", *cache_names], ["velocity"], opset)
        for n in monolithic:
            name = f"monolithic_{n}"
            _export(MonolithicGraph(policy, input_names, n), (*inputs.values(), x),
                    tmp / f"{name}.onnx", [*input_names, "noise"], ["actions"], opset)
            graphs[name] = f"{name}.onnx"
        manifest = Manifest(
            family=policy.family, source_checkpoint=str(checkpoint.resolve()),
            source_checkpoint_id=checkpoint_id(checkpoint), chunk_size=policy.chunk_size,
            action_dim=policy.action_dim, noise_dim=policy.noise_dim, steps=steps, opset=opset,
            precision="fp16" if fp16 else "fp32",
            prefix_inputs=[_spec(n, v) for n, v in inputs.items()],
            cache=[_spec(n, v) for n, v in cache.items()], velocity=_spec("velocity", velocity),
            graphs=graphs, normalization=policy.processor.normalization_stats(),
            torch_version=torch.__version__)
        manifest.write(tmp)
    return manifest
