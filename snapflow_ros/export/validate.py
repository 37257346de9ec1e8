"""`snapflow validate`: an export against its torch reference on a real-shaped observation with
fixed noise, per stage (preprocess, prefix cache, one expert step, end to end)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.nn import functional as F

from snapflow_ros.export.manifest import Manifest
from snapflow_ros.families.registry import load_policy
from snapflow_ros.files import checkpoint_id
from snapflow_ros.runtime.backends import OnnxRuntimeBackend, TorchBackend


def _compare(reference: torch.Tensor, candidate: torch.Tensor) -> dict[str, float]:
    a, b = reference.detach().float().flatten().cpu(), candidate.detach().float().flatten().cpu()
    cosine = F.cosine_similarity(a, b, dim=0).item() if a.abs().sum() and b.abs().sum() else float(torch.equal(a, b))
    return {"max_abs": (a - b).abs().max().item() if a.numel() else 0.0, "cosine": cosine}


def _worst(stats: dict[str, dict[str, float]]) -> dict[str, float]:
    return {"max_abs": max(s["max_abs"] for s in stats.values()),
            "cosine": min(s["cosine"] for s in stats.values()), "tensors": stats}


@torch.no_grad()
def validate_case(torch_backend: TorchBackend, ort_backend: OnnxRuntimeBackend, manifest: Manifest,
                  seed: int) -> dict:
    """Per stage, for the example observation of `seed` (its own images, state and instruction)."""
    policy = torch_backend.policy
    batch = policy.example_batch(1, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, manifest.chunk_size, manifest.noise_dim, generator=generator)
    t, s = torch.ones(1), torch.zeros(1)

    inputs_torch, inputs_ort = torch_backend.prepare(batch), ort_backend.prepare(batch)
    cache_torch = torch_backend.prefix(inputs_torch)
    cache_ort = ort_backend.prefix(inputs_ort)
    named_torch = policy.cache_tensors(cache_torch)
    stages = {
        "preprocess": _worst({n: _compare(v, inputs_ort[n]) for n, v in inputs_torch.items()}),
        "prefix": _worst({n: _compare(named_torch[n], torch.from_numpy(v.numpy()))
                          for n, v in zip(ort_backend.cache_names, cache_ort)}),
        "expert_step": _worst({"velocity": _compare(torch_backend.step(noise, t, s, cache_torch),
                                                    ort_backend.step(noise, t, s, cache_ort))}),
        "end_to_end": _worst({"actions": _compare(torch_backend.sample(batch, noise, manifest.steps),
                                                  ort_backend.sample(batch, noise, manifest.steps))}),
    }
    return {"seed": seed, "instruction": batch["instruction"][0], "stages": stages}


def validate_export(export_dir: Path, reference: Path, threshold: float, seed: int = 0,
                    cases: int = 3) -> dict:
    """Compare on `cases` observations (seeds seed.., each with other images, state and an
    instruction of another length); `passed` is False when any max_abs exceeds `threshold`."""
    manifest = Manifest.read(export_dir)
    policy = load_policy(reference)
    torch_backend, ort_backend = TorchBackend(policy), OnnxRuntimeBackend(export_dir)
    results = [validate_case(torch_backend, ort_backend, manifest, seed + k) for k in range(cases)]
    stages = {name: {"max_abs": max(r["stages"][name]["max_abs"] for r in results),
                     "cosine": min(r["stages"][name]["cosine"] for r in results)}
              for name in results[0]["stages"]}
    passed = all(stage["max_abs"] <= threshold for stage in stages.values())
    return {"export": str(export_dir), "reference": str(reference), "threshold": threshold, "seed": seed,
            "steps": manifest.steps, "precision": manifest.precision, "providers": ort_backend.providers,
            "reference_is_export_source": checkpoint_id(reference) == manifest.source_checkpoint_id,
            "passed": passed, "stages": stages, "cases": results}
