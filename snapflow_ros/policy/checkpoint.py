"""Checkpoint directories: config.json + model.safetensors + normalization.safetensors
(+ provenance.json), written atomically and loaded strictly (never random weights)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from snapflow_ros.errors import CheckpointError
from snapflow_ros.families.registry import family
from snapflow_ros.policy.contract import FlowPolicy

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
NORMALIZATION = "normalization.safetensors"
PROVENANCE = "provenance.json"
_NORMALIZER_PREFIXES = ("state_normalizer.", "action_normalizer.")


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yields an empty temporary sibling of `final`; on success it replaces `final` by rename.

    On an exception the temporary directory is removed and `final` is untouched, so a reader
    sees the old complete directory or the new complete one, never a partial one.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_policy(policy: FlowPolicy, directory: Path, provenance: dict[str, Any] | None = None) -> Path:
    state = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
    normalization = {k: v for k, v in state.items() if k.startswith(_NORMALIZER_PREFIXES)}
    weights = {k: v for k, v in state.items() if k not in normalization}
    with atomic_directory(directory) as tmp:
        (tmp / CONFIG).write_text(json.dumps(policy.config.to_dict(), indent=2) + "\n")
        save_file(weights, tmp / WEIGHTS)
        save_file(normalization, tmp / NORMALIZATION)
        if provenance is not None:
            (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=2, default=str) + "\n")
    return Path(directory)


def read_config(directory: Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a checkpoint directory ({CONFIG} missing)")
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: invalid JSON ({error})") from None
    if "type" not in values:
        raise CheckpointError(f"{path}: no 'type' field naming the policy family")
    return values


def load_policy(directory: Path, device: str | torch.device = "cpu") -> FlowPolicy:
    """Builds the policy from config.json and loads every weight strictly.

    Missing, unexpected or mis-shaped tensors raise CheckpointError naming them.
    """
    directory = Path(directory)
    values = read_config(directory)
    spec = family(values["type"])
    policy = spec.build(spec.config_from_dict(values))
    state: dict[str, torch.Tensor] = {}
    for name in (WEIGHTS, NORMALIZATION):
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{directory}: {name} missing")
        try:
            state.update(load_file(path))
        except Exception as error:  # safetensors raises several types for corrupt files
            raise CheckpointError(f"{path}: unreadable ({error})") from None
    expected = policy.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{directory}: weights do not match config.json: missing {missing[:8]}, "
            f"unexpected {unexpected[:8]}, shape-mismatched {mismatched[:8]}")
    policy.load_state_dict(state, strict=True)
    return policy.to(device).eval()


def checkpoint_id(directory: Path) -> str:
    """<directory name>@<first 12 hex of the weights' sha256>: names the exact weights served."""
    digest = hashlib.sha256()
    for name in (CONFIG, WEIGHTS, NORMALIZATION):
        digest.update((Path(directory) / name).read_bytes())
    return f"{Path(directory).name}@{digest.hexdigest()[:12]}"
