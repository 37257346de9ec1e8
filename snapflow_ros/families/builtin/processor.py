"""Built-in VLA preprocessing: images, instruction bytes, normalised state and actions.

Used by training, evaluation, export and the node alike (through BuiltinVLA.prepare).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from snapflow_ros.errors import InputError

PAD_TOKEN = 0  # byte b is token b + 1


def tokenize_instructions(instructions: list[str], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """UTF-8 bytes as tokens (no vocabulary file to ship): (B, max_tokens) ids and valid mask."""
    ids = torch.full((len(instructions), max_tokens), PAD_TOKEN, dtype=torch.long)
    for row, text in enumerate(instructions):
        data = text.strip().lower().encode("utf-8")[:max_tokens]
        if data:
            ids[row, : len(data)] = torch.tensor(list(data), dtype=torch.long) + 1
    return ids, ids != PAD_TOKEN


def prepare_images(images: dict[str, torch.Tensor], cameras: tuple[str, ...], size: int) -> torch.Tensor:
    """camera -> (B, H, W, 3) uint8  =>  (B, num_cameras, 3, size, size) float in [-1, 1]."""
    missing = [c for c in cameras if c not in images]
    if missing:
        raise InputError(f"images for cameras {missing} missing (got {sorted(images)})")
    stacked = []
    for camera in cameras:
        image = images[camera]
        if image.ndim != 4 or image.shape[-1] != 3 or image.dtype != torch.uint8:
            raise InputError(
                f"camera '{camera}': expected (B, H, W, 3) uint8 RGB, got {tuple(image.shape)} {image.dtype}"
            )
        chw = image.permute(0, 3, 1, 2).float() / 255.0
        if chw.shape[-2:] != (size, size):
            chw = F.interpolate(chw, size=(size, size), mode="bilinear", align_corners=False,
                                antialias=True)
        stacked.append(chw * 2.0 - 1.0)
    return torch.stack(stacked, dim=1)
