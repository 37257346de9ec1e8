"""Built-in VLA preprocessing: images, instruction bytes, normalised state and actions.

Used by training, evaluation, export and the node alike (through BuiltinVLA.prepare).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.nn import functional as F

from snapflow_ros.errors import InputError
from snapflow_ros.families.builtin.configuration import BuiltinVLAConfig
from snapflow_ros.files import CONFIG, load_state_strict, read_config, read_tensors
from snapflow_ros.policy.contract import example_instruction
from snapflow_ros.policy.normalization import Normalizer

NORMALIZATION = "normalization.safetensors"

PAD_TOKEN = 0  # byte b is token b + 1


def instruction_bytes(text: str) -> bytes:
    """What the built-in tokenizes: the instruction stripped, lower-cased, in UTF-8."""
    return text.strip().lower().encode("utf-8")


def tokenize_instructions(instructions: list[str], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """UTF-8 bytes as tokens (no vocabulary file to ship): (B, max_tokens) ids and valid mask."""
    ids = torch.full((len(instructions), max_tokens), PAD_TOKEN, dtype=torch.long)
    for row, text in enumerate(instructions):
        data = instruction_bytes(text)[:max_tokens]
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


class BuiltinProcessor:
    """The built-in VLA's whole input/output path (no model weights): loadable on its own, so an
    ONNX deployment preprocesses exactly as training did."""

    def __init__(self, config: BuiltinVLAConfig, state_normalizer: Normalizer, action_normalizer: Normalizer) -> None:
        self.config = config
        self.cameras = tuple(config.cameras)
        self.state_normalizer = state_normalizer
        self.action_normalizer = action_normalizer

    def example_batch(self, batch_size: int = 1, seed: int = 0) -> dict:
        g = torch.Generator().manual_seed(seed)
        size = self.config.image_size
        return {"images": {c: torch.randint(0, 256, (batch_size, size, size, 3), generator=g, dtype=torch.uint8)
                           for c in self.cameras},
                "instruction": [example_instruction(seed)] * batch_size,
                "state": torch.randn(batch_size, self.config.state_dim, generator=g)}

    def prompt_tokens(self, batch) -> tuple[list[int], int]:
        """Bytes each instruction takes (what tokenize_instructions keeps of it), and the limit."""
        return ([len(instruction_bytes(text)) for text in batch["instruction"]],
                self.config.max_instruction_tokens)

    def prepare(self, batch, device: torch.device) -> dict:
        c = self.config
        tokens, token_mask = tokenize_instructions(list(batch["instruction"]), c.max_instruction_tokens)
        state = torch.as_tensor(batch["state"], dtype=torch.float32)
        if state.ndim != 2 or state.shape[1] != c.state_dim:
            raise InputError(f"state must be (B, {c.state_dim}), got {tuple(state.shape)}")
        normalizers = (self.state_normalizer.to(device), self.action_normalizer.to(device))
        inputs = {
            "images": prepare_images(batch["images"], c.cameras, c.image_size).to(device),
            "tokens": tokens.to(device),
            "token_mask": token_mask.to(device),
            "state": normalizers[0].normalize(state.to(device)),
        }
        if "actions" in batch:
            actions = torch.as_tensor(batch["actions"], dtype=torch.float32).to(device)
            inputs["actions"] = normalizers[1].normalize(actions)
            mask = batch.get("action_mask")
            inputs["action_mask"] = (torch.ones(actions.shape[:2], dtype=torch.bool, device=device)
                                     if mask is None else torch.as_tensor(mask).to(device))
        return inputs

    def unnormalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        return self.action_normalizer.to(actions.device).unnormalize(actions)

    def normalization_stats(self) -> dict[str, dict[str, list[float]]]:
        return {name: {"mean": n.mean.tolist(), "std": n.std.tolist()}
                for name, n in (("state", self.state_normalizer), ("action", self.action_normalizer))}

    def save(self, directory: Path) -> None:
        (Path(directory) / CONFIG).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        save_file({f"state_normalizer.{k}": v.cpu() for k, v in self.state_normalizer.state_dict().items()}
                  | {f"action_normalizer.{k}": v.cpu() for k, v in self.action_normalizer.state_dict().items()},
                  Path(directory) / NORMALIZATION)

    @classmethod
    def load(cls, directory: Path) -> BuiltinProcessor:
        config = BuiltinVLAConfig.from_dict(read_config(directory))
        state, action = Normalizer(config.state_dim), Normalizer(config.action_dim)
        tensors = read_tensors(Path(directory) / NORMALIZATION)
        for prefix, module in (("state_normalizer.", state), ("action_normalizer.", action)):
            load_state_strict(module, {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)},
                              Path(directory))
        return cls(config, state, action)
