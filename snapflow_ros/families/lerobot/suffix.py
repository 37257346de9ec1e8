"""One expert pass of a LeRobot policy with the target time s as an explicit argument.

LeRobot's `denoise_step(x_t, t)` has no place for phi(s). Here the suffix (action tokens) is
embedded as LeRobot's `embed_suffix` does it, with phi(s) added to the sinusoidal embedding of
t where it enters the policy's own time MLP (snapflow-method.md):
    pi0, SmolVLA: action_time_mlp_in([action_emb | sinusoid(t) + phi(s)])
    pi0.5:        time_mlp_in(sinusoid(t) + phi(s))     (the adaRMS conditioning path)
Nothing is stored between calls, so a pass is thread-safe and is recomputed exactly by
gradient checkpointing (LeRobot's `_apply_checkpoint` and our per-layer checkpoints).

pi0 / pi0.5 run the Gemma expert layer by layer against an immutable view of the prefix cache
(`PrefixKV`): no clone of the cache per pass, and each layer can be checkpointed on its own,
which Hugging Face's own layer checkpointing cannot do here (it drops `past_key_values`).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint


def time_embedding(model: nn.Module, t: torch.Tensor, s: torch.Tensor, target_time: nn.Module,
                   width: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, width), or (B, H, width) for per-action times: LeRobot's sinusoid(t) in `dtype`, plus
    phi(s) (zero for a teacher). LeRobot's sinusoid takes (N,) only, hence the flattening."""
    from lerobot.policies.common.vla_utils import create_sinusoidal_pos_embedding

    config = model.config
    emb = create_sinusoidal_pos_embedding(t.reshape(-1), width, min_period=config.min_period,
                                          max_period=config.max_period, device=t.device).type(dtype=dtype)
    return emb.reshape(*t.shape, width) + target_time(s).to(emb.dtype)


def per_token(time_emb: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """A per-sample (B, W) embedding repeated over the tokens; a per-action (B, H, W) one as it is."""
    return time_emb[:, None, :].expand_as(tokens) if time_emb.dim() == 2 else time_emb


def _suffix_masks(batch: int, tokens: int, first: list[int], device: torch.device,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad masks (all valid) and LeRobot's block-causal att masks: `first` then zeros."""
    pad = torch.ones(batch, tokens, dtype=torch.bool, device=device)
    att = torch.tensor(first + [0] * (tokens - len(first)), dtype=dtype, device=device)
    return pad, att[None, :].expand(batch, tokens)


def pi05_suffix(model: nn.Module, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor,
                target_time: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(embs, pad masks, att masks, adaRMS condition) as PI05Pytorch.embed_suffix, with phi(s)."""
    time_emb = time_embedding(model, t, s, target_time, model.action_in_proj.out_features, t.dtype)
    action_emb = model._apply_checkpoint(model.action_in_proj, x)

    def time_mlp(emb: torch.Tensor) -> torch.Tensor:
        return F.silu(model.time_mlp_out(F.silu(model.time_mlp_in(emb))))

    condition = model._apply_checkpoint(time_mlp, time_emb)
    pad, att = _suffix_masks(x.shape[0], model.config.chunk_size, [1], t.device, action_emb.dtype)
    return action_emb, pad, att, condition


def pi0_suffix(model: nn.Module, state: torch.Tensor, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor,
               target_time: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]:
    """(embs, pad masks, att masks, None) as PI0Pytorch.embed_suffix (state token first), with phi(s)."""
    if model.state_proj.weight.dtype == torch.float32:
        state = state.to(torch.float32)
    state_emb = model._apply_checkpoint(model.state_proj, state)
    time_emb = time_embedding(model, t, s, target_time, model.action_in_proj.out_features, t.dtype)
    action_emb = model._apply_checkpoint(model.action_in_proj, x)
    fused = torch.cat([action_emb, per_token(time_emb, action_emb)], dim=2)

    def mlp(emb: torch.Tensor) -> torch.Tensor:
        return model.action_time_mlp_out(F.silu(model.action_time_mlp_in(emb)))

    embs = torch.cat([state_emb[:, None, :], model._apply_checkpoint(mlp, fused)], dim=1)
    pad, att = _suffix_masks(x.shape[0], embs.shape[1], [1, 1], t.device, embs.dtype)
    return embs, pad, att, None


def smolvla_suffix(model: nn.Module, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor,
                   target_time: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(embs, pad masks, att masks) as VLAFlowMatching.embed_suffix, with phi(s)."""
    action_emb = model.action_in_proj(x)
    time_emb = time_embedding(model, t, s, target_time, model.vlm_with_expert.expert_hidden_size,
                              action_emb.dtype)
    fused = torch.cat([action_emb, per_token(time_emb, action_emb)], dim=2)
    embs = model.action_time_mlp_out(F.silu(model.action_time_mlp_in(fused)))
    pad, att = _suffix_masks(x.shape[0], embs.shape[1], [1] * embs.shape[1], x.device, embs.dtype)
    return embs, pad, att


def suffix_attention(prefix_pad_masks: torch.Tensor, pad: torch.Tensor,
                     att: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(2-D attention mask over [prefix | suffix], suffix position ids), as LeRobot's denoise_step."""
    from lerobot.policies.common.vla_utils import make_att_2d_masks

    batch, suffix_len = pad.shape
    prefix_2d = prefix_pad_masks[:, None, :].expand(batch, suffix_len, prefix_pad_masks.shape[1])
    mask = torch.cat([prefix_2d, make_att_2d_masks(pad, att)], dim=2)
    position_ids = prefix_pad_masks.sum(dim=-1)[:, None] + torch.cumsum(pad, dim=1) - 1
    return mask, position_ids


class PrefixKV:
    """One layer's prefix keys/values as the Hugging Face attention's cache argument: `update`
    returns [prefix | new] without storing anything, so passes never see each other's tokens."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.keys, self.values = keys, values

    def update(self, keys: torch.Tensor, values: torch.Tensor, *args: Any, **kwargs: Any
               ) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat([self.keys, keys], dim=-2), torch.cat([self.values, values], dim=-2)


def gemma_expert(expert: nn.Module, embs: torch.Tensor, mask_4d: torch.Tensor, position_ids: torch.Tensor,
                 prefix_kv: list[tuple[torch.Tensor, torch.Tensor]], condition: torch.Tensor | None,
                 checkpoint_layers: bool) -> torch.Tensor:
    """The Gemma expert (PiGemmaModel) over the suffix, attending to the prefix: its forward
    without the cache bookkeeping, each layer checkpointed when asked (training only)."""
    # PiGemmaModel.forward casts to bfloat16 when the layers are; any low precision here (FP16
    # export), while the projections around the expert stay float32 as in LeRobot's layout.
    hidden = embs.to(expert.layers[0].self_attn.q_proj.weight.dtype)
    position_embeddings = expert.rotary_emb(hidden, position_ids)
    # pi0.5 with per-action times conditions each token: LeRobot's layer takes one condition per
    # sample, so those layers run through per_token_layer (the same operations, token-wise).
    layer_forward = per_token_layer if condition is not None and condition.dim() == 3 else None
    for layer, (keys, values) in zip(expert.layers, prefix_kv, strict=True):
        run = partial(layer if layer_forward is None else partial(layer_forward, layer), attention_mask=mask_4d,
                      position_ids=position_ids, past_key_values=PrefixKV(keys, values),
                      position_embeddings=position_embeddings, adarms_cond=condition)
        if checkpoint_layers and torch.is_grad_enabled():
            hidden = checkpoint(run, hidden, use_reentrant=False, preserve_rng_state=False)
        else:
            hidden = run(hidden)
    hidden, _ = adaptive_norm(expert.norm, hidden, condition)
    return hidden


def adaptive_norm(norm: nn.Module, x: torch.Tensor, cond: torch.Tensor | None
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """PiGemmaRMSNorm(x, cond), also for a per-token cond (B, T, W) (LeRobot's takes (B, W))."""
    if cond is None or cond.dim() == 2 or norm.dense is None:
        return norm(x, cond)
    scale, shift, gate = norm.dense(cond).chunk(3, dim=-1)  # one modulation per token
    normed = norm._norm(x) * (1 + scale.float()) + shift.float()
    return normed.to(x.dtype), gate.to(x.dtype)


def per_token_layer(layer: nn.Module, hidden: torch.Tensor, *, adarms_cond: torch.Tensor, **attention
                    ) -> torch.Tensor:
    """A PiGemma decoder layer's forward with a per-token adaRMS condition: norm, attention,
    gated residual, norm, MLP, gated residual, as LeRobot's."""
    residual = hidden
    hidden, gate = adaptive_norm(layer.input_layernorm, hidden, adarms_cond)
    hidden, _ = layer.self_attn(hidden, **attention)
    hidden = residual + (hidden if gate is None else hidden * gate)
    residual = hidden
    hidden, gate = adaptive_norm(layer.post_attention_layernorm, hidden, adarms_cond)
    hidden = layer.mlp(hidden)
    return residual + (hidden if gate is None else hidden * gate)
