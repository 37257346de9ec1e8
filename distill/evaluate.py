"""Offline evaluation on held-out data: accuracy of teacher@N, naive teacher@1 and student@1
against the ground truth and against the 10-step teacher, plus per-call latency.

Accuracy counts valid action positions only (action_mask): past an episode's end a chunk is padding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from snapflow_distill.loss import masked_mse
from snapflow_ros.data.chunks import InMemoryChunkDataset
from snapflow_ros.errors import ConfigError
from snapflow_ros.flow.sampling import sample_actions
from snapflow_ros.policy.contract import FlowPolicy, RawBatch
from snapflow_ros.runtime.timing import measure_interleaved


@dataclass(frozen=True)
class Candidate:
    name: str            # e.g. "teacher@10"
    policy: FlowPolicy
    steps: int


def sample_chunks(policy: FlowPolicy, batch: RawBatch, steps: int, noise: torch.Tensor) -> torch.Tensor:
    """Unnormalised (B, chunk, dim) actions on the CPU, in eval mode: the sampling path of the
    torch backend (snapflow_ros.flow.sampling.sample_actions), so offline metrics are the node's."""
    policy.eval()
    return sample_actions(policy, batch, noise, steps).cpu()


def _mse_cos(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """MSE over valid (B, H) positions; per-sample cosine of the chunks with padding zeroed.
    In float32, whatever the policy's dtype."""
    a, b = a.float(), b.float()
    valid = mask[..., None].float()
    return (float(masked_mse(a, b, mask, a.shape[-1])),
            float(F.cosine_similarity((a * valid).flatten(1), (b * valid).flatten(1), dim=1).mean()))


def sample_dataset(policy: FlowPolicy, dataset: InMemoryChunkDataset, steps: int, noise: torch.Tensor,
                   batch_size: int) -> torch.Tensor:
    """sample_chunks over the whole dataset, `batch_size` samples at a time (sample i keeps noise[i])."""
    parts = [sample_chunks(policy, dataset.batch(index), steps, noise[index])
             for index in torch.arange(len(dataset)).split(batch_size)]
    return torch.cat(parts)


def device_synchronizer(device: torch.device) -> Callable[[], None] | None:
    """What a timed call must wait for: the CUDA queue of `device`, nothing on the CPU."""
    device = torch.device(device)
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None


@torch.no_grad()
def latency_ms(candidates: list[Candidate], batch: RawBatch, repeats: int) -> dict[str, dict[str, float]]:
    """Per-call latency at batch size 1 (prepare -> prefix -> steps -> unnormalise), interleaved."""
    single = RawBatch(images={c: v[:1] for c, v in batch["images"].items()},
                      instruction=batch["instruction"][:1], state=batch["state"][:1])
    shape = (1, candidates[0].policy.chunk_size, candidates[0].policy.noise_dim)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    return measure_interleaved(
        {c.name: (lambda c=c: sample_chunks(c.policy, single, c.steps, noise)) for c in candidates}, repeats,
        synchronize=device_synchronizer(candidates[0].policy.device))


def evaluate(candidates: list[Candidate], reference: Candidate, dataset: InMemoryChunkDataset,
             seed: int, latency_repeats: int = 50,
             extra: Callable[[torch.Tensor, RawBatch], dict[str, float]] | None = None,
             batch_size: int = 32) -> dict:
    """Metrics per candidate; every candidate starts from the same noise (seeded), which does not
    depend on batch_size, the number of held-out samples sampled at once."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    batch = dataset.batch(torch.arange(len(dataset)))
    mask = batch["action_mask"]
    shape = (len(dataset), reference.policy.chunk_size, reference.policy.noise_dim)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    reference_actions = sample_dataset(reference.policy, dataset, reference.steps, noise, batch_size)
    latencies = latency_ms(candidates, batch, latency_repeats)
    results = {}
    for c in candidates:
        actions = (reference_actions if c == reference
                   else sample_dataset(c.policy, dataset, c.steps, noise, batch_size))
        mse_gt, cos_gt = _mse_cos(actions, batch["actions"], mask)
        mse_ref, cos_ref = _mse_cos(actions, reference_actions, mask)
        results[c.name] = {
            "steps": c.steps, "mse_vs_ground_truth": mse_gt, "cosine_vs_ground_truth": cos_gt,
            f"mse_vs_{reference.name}": mse_ref, f"cosine_vs_{reference.name}": cos_ref,
            "latency_ms": latencies[c.name], **(extra(actions, batch) if extra else {}),
        }
    return {"samples": len(dataset), "valid_action_positions": int(mask.sum()), "noise_seed": seed,
            "reference": reference.name, "batch_size": batch_size, "results": results}


@torch.no_grad()
def latency_breakdown(policy: FlowPolicy, batch: RawBatch, repeats: int,
                      steps: tuple[int, ...] = (10, 1)) -> dict[str, dict[str, float]]:
    """Batch-1 latency of the prefix (prepare + embed_prefix), one expert step, and end to end
    (prepare -> prefix -> N steps -> unnormalise) for each N, interleaved."""
    policy.eval()
    single = RawBatch(images={c: v[:1] for c, v in batch["images"].items()},
                      instruction=batch["instruction"][:1], state=batch["state"][:1])
    noise = torch.randn(1, policy.chunk_size, policy.noise_dim, generator=torch.Generator().manual_seed(0))
    noise = noise.to(policy.device)
    ones = torch.ones(1, device=policy.device)
    cache = policy.embed_prefix(policy.prepare(single))
    return measure_interleaved({
        "prefix": lambda: policy.embed_prefix(policy.prepare(single)),
        "expert_step": lambda: policy.velocity(noise, ones, 0 * ones, cache),
        **{f"end_to_end_{n}_steps": (lambda n=n: sample_chunks(policy, single, n, noise)) for n in steps},
    }, repeats, synchronize=device_synchronizer(policy.device))
