"""BuiltinVLA: a compact vision-language-action flow policy shaped like pi0.

Prefix (computed once per chunk): patch tokens of each camera + instruction byte tokens +
one state token -> `num_layers` bidirectional transformer blocks; each layer's keys/values
are cached. Expert (one pass per denoising step): action tokens fused with the time embedding
(sinusoid(t) + phi(s), then pi0's action/time MLP) -> `num_layers` blocks whose attention
spans [prefix K/V of the same layer ; the action tokens] -> velocity.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

from snapflow_ros.families.builtin.configuration import BuiltinVLAConfig
from snapflow_ros.families.builtin.processor import NORMALIZATION, BuiltinProcessor
from snapflow_ros.files import WEIGHTS, load_state_strict, read_config, read_tensors
from snapflow_ros.flow.target_time import TargetTimeMLP
from snapflow_ros.flow.time import sinusoidal_time_embedding
from snapflow_ros.policy.contract import FlowPolicy, RawBatch
from snapflow_ros.policy.normalization import Normalizer

_NORMALIZER_PREFIXES = ("state_normalizer.", "action_normalizer.")


@dataclass
class BuiltinPrefixCache:
    keys: list[torch.Tensor]    # per layer (B, heads, P, head_dim)
    values: list[torch.Tensor]  # per layer (B, heads, P, head_dim)
    mask: torch.Tensor          # (B, P) True on valid prefix tokens

    @property
    def batch_size(self) -> int:
        return int(self.mask.shape[0])

    def select(self, index: torch.Tensor) -> BuiltinPrefixCache:
        return BuiltinPrefixCache([k[index] for k in self.keys], [v[index] for v in self.values],
                                  self.mask[index])


class Block(nn.Module):
    """Pre-norm transformer block whose attention is split so K/V can be cached or joined."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm_attention = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.attention_out = nn.Linear(width, width)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(),
                                 nn.Linear(mlp_ratio * width, width))

    def project(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, T, W) -> q, k, v each (B, heads, T, W / heads)."""
        b, t, w = h.shape
        qkv = self.qkv(self.norm_attention(h)).view(b, t, 3, self.num_heads, w // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v

    def finish(self, h: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               key_mask: torch.Tensor) -> torch.Tensor:
        """Attention of q over (k, v) where key_mask (B, Tk) is True, then the MLP."""
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
        b, _, t, _ = attended.shape
        h = h + self.attention_out(attended.transpose(1, 2).reshape(b, t, -1))
        return h + self.mlp(self.norm_mlp(h))


class BuiltinVLA(FlowPolicy):
    family = "builtin"

    def __init__(self, config: BuiltinVLAConfig) -> None:
        super().__init__()
        self.config = config
        self.chunk_size = config.chunk_size
        self.action_dim = config.action_dim
        w = config.width
        # Backbone (frozen during SnapFlow distillation).
        self.patch_embed = nn.Conv2d(3, w, kernel_size=config.patch_size, stride=config.patch_size)
        self.patch_position = nn.Parameter(torch.randn(config.tokens_per_camera, w) * 0.02)
        self.camera_embed = nn.Parameter(torch.randn(len(config.cameras), w) * 0.02)
        self.token_embed = nn.Embedding(257, w)
        self.token_position = nn.Parameter(torch.randn(config.max_instruction_tokens, w) * 0.02)
        self.state_proj = nn.Linear(config.state_dim, w)
        self.prefix_blocks = nn.ModuleList(
            Block(w, config.num_heads, config.mlp_ratio) for _ in range(config.num_layers))
        # Action expert (trained by SnapFlow).
        self.action_in_proj = nn.Linear(config.action_dim, w)
        self.action_position = nn.Parameter(torch.randn(config.chunk_size, w) * 0.02)
        self.action_time_mlp_in = nn.Linear(2 * w, w)
        self.action_time_mlp_out = nn.Linear(w, w)
        self.expert_blocks = nn.ModuleList(
            Block(w, config.num_heads, config.mlp_ratio) for _ in range(config.num_layers))
        self.expert_norm = nn.LayerNorm(w)
        self.action_out_proj = nn.Linear(w, config.action_dim)
        self.target_time = TargetTimeMLP(w)
        # Normalisation statistics, fitted on the training data.
        self.state_normalizer = Normalizer(config.state_dim)
        self.action_normalizer = Normalizer(config.action_dim)

    # --- the one preprocessing path --------------------------------------------------------
    @property
    def processor(self) -> BuiltinProcessor:
        return BuiltinProcessor(self.config, self.state_normalizer, self.action_normalizer)

    def prepare(self, batch: RawBatch) -> dict[str, Any]:
        return self.processor.prepare(batch, self.device)

    @classmethod
    def load_processor(cls, directory: Path) -> BuiltinProcessor:
        return BuiltinProcessor.load(directory)

    # --- prefix: once per observation -------------------------------------------------------
    def embed_prefix(self, inputs: dict[str, Any]) -> BuiltinPrefixCache:
        images = inputs["images"]  # (B, C, 3, S, S)
        b, num_cameras = images.shape[:2]
        patches = self.patch_embed(images.flatten(0, 1)).flatten(2).transpose(1, 2)  # (B*C, N, W)
        patches = patches + self.patch_position
        patches = patches.view(b, num_cameras, -1, patches.shape[-1]) + self.camera_embed[:, None, :]
        image_tokens = patches.flatten(1, 2)
        text_tokens = self.token_embed(inputs["tokens"]) + self.token_position
        state_token = self.state_proj(inputs["state"])[:, None, :]
        h = torch.cat([image_tokens, text_tokens, state_token], dim=1)
        ones = torch.ones(b, 1, dtype=torch.bool, device=h.device)
        mask = torch.cat([ones.expand(b, image_tokens.shape[1]), inputs["token_mask"], ones], dim=1)
        keys, values = [], []
        for block in self.prefix_blocks:
            q, k, v = block.project(h)
            keys.append(k)
            values.append(v)
            h = block.finish(h, q, k, v, mask)
        return BuiltinPrefixCache(keys, values, mask)

    # --- expert: one pass per denoising step ------------------------------------------------
    def velocity(self, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor,
                 cache: BuiltinPrefixCache) -> torch.Tensor:
        w = self.config.width
        action_tokens = self.action_in_proj(x) + self.action_position
        # SnapFlow: phi(s) joins sinusoid(t) before the policy's own time MLP. t and s are (B,)
        # or (B, H) per action (a committed prefix rides at t = s = 0); the MLP is per token.
        time_embedding = sinusoidal_time_embedding(t, w).to(x.dtype) + self.target_time(s)
        if time_embedding.dim() == 2:
            time_embedding = time_embedding[:, None, :]
        fused = torch.cat([action_tokens, time_embedding.expand_as(action_tokens)], -1)
        h = self.action_time_mlp_out(F.silu(self.action_time_mlp_in(fused)))
        ones = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
        key_mask = torch.cat([cache.mask, ones], dim=1)
        for block, prefix_k, prefix_v in zip(self.expert_blocks, cache.keys, cache.values):
            q, k, v = block.project(h)
            h = block.finish(h, q, torch.cat([prefix_k, k], 2), torch.cat([prefix_v, v], 2), key_mask)
        return self.action_out_proj(self.expert_norm(h))

    def unnormalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        return self.processor.unnormalize_actions(actions)

    # --- checkpoint directory: config.json, model.safetensors, normalization.safetensors ------
    def save_pretrained(self, directory: Path) -> None:
        self.processor.save(directory)  # config.json + normalization.safetensors
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()
                 if not k.startswith(_NORMALIZER_PREFIXES)}
        save_file(state, Path(directory) / WEIGHTS)

    @classmethod
    def from_pretrained(cls, directory: Path, device: str | torch.device = "cpu") -> BuiltinVLA:
        directory = Path(directory)
        policy = cls(BuiltinVLAConfig.from_dict(read_config(directory)))
        state = read_tensors(directory / WEIGHTS) | read_tensors(directory / NORMALIZATION)
        load_state_strict(policy, state, directory)
        return policy.to(device)

    def cache_tensors(self, cache: BuiltinPrefixCache) -> dict[str, torch.Tensor]:
        tensors = {f"key_{i}": k for i, k in enumerate(cache.keys)}
        tensors |= {f"value_{i}": v for i, v in enumerate(cache.values)}
        return tensors | {"prefix_mask": cache.mask}

    def cache_from_tensors(self, tensors: dict[str, torch.Tensor]) -> BuiltinPrefixCache:
        n = self.config.num_layers
        return BuiltinPrefixCache([tensors[f"key_{i}"] for i in range(n)],
                                  [tensors[f"value_{i}"] for i in range(n)], tensors["prefix_mask"])

    def expert_parameters(self) -> list[nn.Parameter]:
        modules = [self.action_in_proj, self.action_time_mlp_in, self.action_time_mlp_out,
                   self.expert_blocks, self.expert_norm, self.action_out_proj, self.target_time]
        return [p for m in modules for p in m.parameters()] + [self.action_position]
