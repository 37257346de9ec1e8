"""`snapflow export`: a FlowPolicy checkpoint -> prefix.onnx + expert.onnx (+ monolithic graphs)
+ manifest.json + the weight-free processor, written atomically.

Uses the maintained exporter (torch.onnx.export with dynamo=True), static shapes at batch 1, and
checks every graph with onnx.checker. A graph whose weights exceed protobuf's 2 GB limit (the
prefix of a real pi0 / pi0.5: the 257152-token embedding alone is 2.1 GB in float32) keeps them
in `<graph>.onnx.data` beside it (ONNX external data); onnxruntime finds that file itself.

Nothing is visible under the output's name before the whole export is written and checked: a
failure (a full disk, a file-size limit, a graph the exporter cannot trace) names the file, leaves
a previous export there as it was and removes the temporary directory.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from snapflow_ros.errors import ExportError
from snapflow_ros.export.graphs import (
    ExpertGraph,
    MonolithicGraph,
    PrefixGraph,
    cast_floats,
    flatten,
    unflatten,
)
from snapflow_ros.export.manifest import Manifest, TensorSpec
from snapflow_ros.families.registry import load_policy
from snapflow_ros.files import WRITE_FAILURES, atomic_directory, checkpoint_id, reported_write, trained_max_delay
from snapflow_ros.flow.sampling import default_steps

DEFAULT_OPSET = 18
PROTOBUF_LIMIT = 2**31  # bytes in one serialised ModelProto
EXTERNAL_DATA_ABOVE = int(0.9 * PROTOBUF_LIMIT)  # weights plus graph must stay under the limit


def _spec(name: str, tensor: torch.Tensor) -> TensorSpec:
    return TensorSpec(name, list(tensor.shape), str(tensor.dtype).removeprefix("torch."))


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of the parameters and buffers a graph of `module` embeds (shared tensors once)."""
    seen: dict[int, int] = {}
    for tensor in [*module.parameters(), *module.buffers()]:
        seen[tensor.data_ptr()] = tensor.numel() * tensor.element_size()
    return sum(seen.values())


def _export(module: torch.nn.Module, args: tuple, path: Path, input_names: list[str],
            output_names: list[str], opset: int, final: Path | None = None) -> bool:
    """Writes and checks one graph at `path` (`final`: where it will appear, named in errors);
    returns whether its weights went to external data."""
    import onnx

    final = final or path
    external = weight_bytes(module) > EXTERNAL_DATA_ABOVE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, args, str(path), dynamo=True, opset_version=opset,
                              input_names=input_names, output_names=output_names,
                              external_data=external, verbose=False, optimize=True)
        except WRITE_FAILURES as error:  # the graph was traced; writing it failed
            raise ExportError(f"cannot write {final}: {type(error).__name__}: {error}") from error
        except Exception as error:
            cause = error.__cause__ or error.__context__
            if isinstance(cause, WRITE_FAILURES):  # the exporter wraps what its writer raised
                raise ExportError(f"cannot write {final}: {type(cause).__name__}: {cause}") from error
            raise ExportError(f"exporting {path.name} failed: {error}") from error
    try:
        # By path: the checker then reads external data itself and is not bound by 2 GB.
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as error:
        raise ExportError(f"{path.name} failed onnx.checker: {error}") from error
    return external


@torch.no_grad()
def export_policy(checkpoint: Path, output: Path, *, steps: int | None = None, opset: int = DEFAULT_OPSET,
                  fp16: bool = False, monolithic: tuple[int, ...] = ()) -> Manifest:
    """Exports the policy of `checkpoint` into `output` (replaced atomically) and returns its manifest.

    steps: the denoising steps the runtime will run (default: 1 for a SnapFlow student, 10 else).
    monolithic: also export single graphs running prefix + N steps, for each N (benchmarks).
    """
    checkpoint, output = Path(checkpoint), Path(output)
    policy = load_policy(checkpoint).eval()
    steps = steps or default_steps(policy)
    graphs = {"prefix": "prefix.onnx", "expert": "expert.onnx"}
    with atomic_directory(output) as tmp:
        (tmp / "processor").mkdir()
        with reported_write(output / "processor", ExportError):
            policy.processor.save(tmp / "processor")  # float32 statistics, before any cast
        if fp16:  # the graphs take and give float32; inside, the family's fp16 layout
            policy.to_precision(torch.float16)
        # Example tensors from the policy as exported, so the manifest has the cache's dtypes.
        inputs = flatten(policy.prepare(policy.example_batch(1)))
        input_names = list(inputs)
        cache = policy.cache_tensors(policy.embed_prefix(unflatten(
            dict(zip(input_names, cast_floats(inputs.values(), policy.input_dtype))))))
        cache_names = list(cache)
        x = torch.randn(1, policy.chunk_size, policy.noise_dim)
        # Per-action times (a committed prefix is at t = 0), distinct tensors for t and s: the
        # exporter would otherwise trace them as one input.
        t, s = torch.ones(1, policy.chunk_size), torch.zeros(1, policy.chunk_size)
        velocity = ExpertGraph(policy, cache_names)(x, t, s, *cache.values())
        external = {"prefix": _export(PrefixGraph(policy, input_names, cache_names), tuple(inputs.values()),
                                      tmp / "prefix.onnx", input_names, cache_names, opset, output / "prefix.onnx"),
                    "expert": _export(ExpertGraph(policy, cache_names), (x, t, s, *cache.values()),
                                      tmp / "expert.onnx", ["x", "t", "s", *cache_names], ["velocity"], opset,
                                      output / "expert.onnx")}
        for n in monolithic:
            name = f"monolithic_{n}"
            external[name] = _export(MonolithicGraph(policy, input_names, n), (*inputs.values(), x),
                                     tmp / f"{name}.onnx", [*input_names, "noise"], ["actions"], opset,
                                     output / f"{name}.onnx")
            graphs[name] = f"{name}.onnx"
        manifest = Manifest(
            family=policy.family, source_checkpoint=str(checkpoint.resolve()),
            source_checkpoint_id=checkpoint_id(checkpoint), chunk_size=policy.chunk_size,
            action_dim=policy.action_dim, noise_dim=policy.noise_dim, steps=steps, opset=opset,
            precision="fp16" if fp16 else "fp32",
            prefix_inputs=[_spec(n, v) for n, v in inputs.items()],
            cache=[_spec(n, v) for n, v in cache.items()], velocity=_spec("velocity", velocity),
            graphs=graphs, per_action_time=True, max_delay=trained_max_delay(checkpoint),
            normalization=policy.processor.normalization_stats(),
            torch_version=torch.__version__,
            external_data=sorted(role for role, used in external.items() if used))
        with reported_write(output / "manifest.json", ExportError):
            manifest.write(tmp)
    return manifest
