"""LeRobot pi0 / pi0.5 / SmolVLA policies behind the FlowPolicy contract.

What is LeRobot's and reused as is: the checkpoint's pre/post-processor pipelines (normalisation,
tokenisation, pi0.5's state-in-prompt), the policies' own image/state/action preparation, the
prefix embedding and `denoise_step`. What SnapFlow adds: phi(s) (TargetTimeMLP), added to the
sinusoidal time embedding where it enters the policy's own time MLP, through a forward pre-hook
on that MLP's first Linear (so no LeRobot code is copied and no checkpoint key changes):
    pi0, SmolVLA: action_time_mlp_in([action_emb | time_emb])  -> phi(s) joins the time half
    pi0.5:        time_mlp_in(time_emb)  (the adaRMS conditioning path)
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from snapflow_ros.errors import CheckpointError
from snapflow_ros.families.lerobot.processor import (
    IMAGE_PREFIX,
    POSTPROCESSOR,
    PREPROCESSOR,
    TOKENIZER,
    LeRobotProcessor,
    load_processors,
)
from snapflow_ros.families.lerobot.tiny import tiny_pi_architecture
from snapflow_ros.flow.target_time import TargetTimeMLP
from snapflow_ros.policy.checkpoint import CONFIG, WEIGHTS, load_state_strict, read_tensors
from snapflow_ros.policy.contract import FlowPolicy, RawBatch

TARGET_TIME = "snapflow_target_time.safetensors"  # phi(s) of a SnapFlow student
SNAPFLOW = "snapflow.json"                        # what LeRobot does not know about this checkpoint
VLM = "vlm"                                        # SmolVLA: bundled VLM config + processor files


@dataclass
class LeRobotPrefixCache:
    past_key_values: Any            # transformers DynamicCache of the prefix
    prefix_pad_masks: torch.Tensor  # (B, P)
    state: torch.Tensor | None      # pi0 only: the state token lives in the suffix

    @property
    def batch_size(self) -> int:
        return int(self.prefix_pad_masks.shape[0])

    def select(self, index: torch.Tensor) -> LeRobotPrefixCache:
        from transformers import DynamicCache

        layers = tuple((k[index], v[index], *rest) for k, v, *rest in self.past_key_values)
        return LeRobotPrefixCache(DynamicCache(layers), self.prefix_pad_masks[index],
                                  None if self.state is None else self.state[index])


class LeRobotAdapter(FlowPolicy):
    """Common part; subclasses name the LeRobot class, the time-MLP entry and the prefix/step calls."""

    family: str
    split_time_input: bool  # the hooked Linear sees [action_emb | time_emb] (True) or time_emb

    def __init__(self, policy: nn.Module, preprocessor: Any, postprocessor: Any,
                 bundled: dict[str, Path] | None = None, tiny: dict | None = None) -> None:
        super().__init__()
        self.lerobot = policy
        self.preprocessor = preprocessor
        self.postprocessor = postprocessor
        self.bundled = bundled or {}  # TOKENIZER / VLM directories copied into saved checkpoints
        self.tiny = tiny
        config = policy.config
        self.chunk_size = int(config.chunk_size)
        self.action_dim = int(config.output_features["action"].shape[0])
        self.cameras = tuple(k[len(IMAGE_PREFIX):] for k in config.image_features)
        self.target_time = TargetTimeMLP(self.time_width(), config.min_period, config.max_period)
        self._target_time: torch.Tensor | None = None
        self.time_input().register_forward_pre_hook(self._add_target_time)

    # --- family specifics -------------------------------------------------------------------
    @classmethod
    def policy_class(cls) -> type:
        raise NotImplementedError

    def time_input(self) -> nn.Linear:
        raise NotImplementedError

    def time_width(self) -> int:
        return int(self.lerobot.model.action_in_proj.out_features)

    @classmethod
    def model_inputs(cls, policy: Any, batch: dict[str, Any]) -> dict[str, Any]:
        """The policy class's own image/state/token preparation (`policy` may be a stand-in
        with `config` and `parameters()`)."""
        raise NotImplementedError

    def embed_prefix(self, inputs: dict[str, Any]) -> LeRobotPrefixCache:
        raise NotImplementedError

    def denoise(self, x: torch.Tensor, t: torch.Tensor, cache: LeRobotPrefixCache) -> torch.Tensor:
        raise NotImplementedError

    def expert_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    # --- FlowPolicy ----------------------------------------------------------------------------
    @property
    def noise_dim(self) -> int:
        return int(self.lerobot.config.max_action_dim)

    def _add_target_time(self, module: nn.Module, args: tuple) -> tuple | None:
        if self._target_time is None:
            return None
        (x,) = args
        phi = self.target_time(self._target_time.to(x.device)).to(x.dtype)
        if self.split_time_input:
            width = x.shape[-1] // 2
            return (torch.cat([x[..., :width], x[..., width:] + phi[:, None, :]], dim=-1),)
        return (x + phi,)

    @property
    def processor(self) -> LeRobotProcessor:
        return LeRobotProcessor(type(self), self.lerobot.config, self.preprocessor, self.postprocessor,
                                self.bundled.get(TOKENIZER))

    @classmethod
    def load_processor(cls, directory: Path) -> LeRobotProcessor:
        """From a directory written by processor.save(): no model is built."""
        return LeRobotProcessor.load(cls, Path(directory))

    def prepare(self, batch: RawBatch) -> dict[str, Any]:
        return self.processor.prepare(batch, self.device)

    def cache_tensors(self, cache: LeRobotPrefixCache) -> dict[str, torch.Tensor]:
        tensors: dict[str, torch.Tensor] = {}
        for i, (keys, values, *_) in enumerate(cache.past_key_values):
            tensors[f"key_{i}"], tensors[f"value_{i}"] = keys, values
        tensors["prefix_pad_masks"] = cache.prefix_pad_masks
        if cache.state is not None:
            tensors["suffix_state"] = cache.state  # not "state": that names a prefix input
        return tensors

    def cache_from_tensors(self, tensors: dict[str, torch.Tensor]) -> LeRobotPrefixCache:
        from transformers import DynamicCache

        layers = sum(1 for name in tensors if name.startswith("key_"))
        kv = DynamicCache(tuple((tensors[f"key_{i}"], tensors[f"value_{i}"]) for i in range(layers)))
        return LeRobotPrefixCache(kv, tensors["prefix_pad_masks"], tensors.get("suffix_state"))

    def velocity(self, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor,
                 cache: LeRobotPrefixCache) -> torch.Tensor:
        self._target_time = s
        try:
            return self.denoise(x, t, cache)
        finally:
            self._target_time = None

    def unnormalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        return self.processor.unnormalize_actions(actions)

    def expert_parameters(self) -> list[nn.Parameter]:
        seen: set[int] = set()
        params = []
        for module in [*self.expert_modules(), self.target_time]:
            for p in module.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        return params

    # --- checkpoints: LeRobot's layout + phi + bundled tokenizer/VLM files --------------------
    def save_pretrained(self, directory: Path) -> None:
        directory = Path(directory)
        self.lerobot.save_pretrained(directory)  # config.json + model.safetensors (LeRobot's own)
        self.preprocessor.save_pretrained(directory)
        self.postprocessor.save_pretrained(directory)
        state = {k: v.detach().cpu().contiguous() for k, v in self.target_time.state_dict().items()}
        save_file(state, directory / TARGET_TIME)
        for name, source in self.bundled.items():
            shutil.copytree(source, directory / name)
        meta = {"family": self.family, "target_time": TARGET_TIME, "tiny_architecture": self.tiny}
        (directory / SNAPFLOW).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: Path, device: str | torch.device = "cpu") -> LeRobotAdapter:
        from lerobot.configs.policies import PreTrainedConfig

        directory = Path(directory)
        for name in (CONFIG, WEIGHTS, PREPROCESSOR, POSTPROCESSOR):
            if not (directory / name).is_file():
                raise CheckpointError(f"{directory}: {name} missing (LeRobot checkpoints need "
                                      f"{CONFIG}, {WEIGHTS}, {PREPROCESSOR}, {POSTPROCESSOR})")
        meta = json.loads((directory / SNAPFLOW).read_text()) if (directory / SNAPFLOW).is_file() else {}
        policy_class = cls.policy_class()  # importing it registers its config type with LeRobot
        try:
            config = PreTrainedConfig.from_pretrained(directory)
        except Exception as error:  # draccus raises several types for a malformed config
            raise CheckpointError(f"{directory / CONFIG}: not a valid {cls.family} config ({error})") from None
        config.device = str(torch.device(device))
        bundled = {name: directory / name for name in (TOKENIZER, VLM) if (directory / name).is_dir()}
        cls.adjust_config(config, bundled)
        tiny = meta.get("tiny_architecture")
        with tiny_pi_architecture(tiny):
            policy = policy_class(config)
        load_lerobot_weights(policy, directory / WEIGHTS)
        preprocessor, postprocessor = load_processors(directory, config.device, bundled.get(TOKENIZER))
        adapter = cls(policy, preprocessor, postprocessor, bundled, tiny)
        if (directory / TARGET_TIME).is_file():
            load_state_strict(adapter.target_time, read_tensors(directory / TARGET_TIME), directory)
        return adapter.to(device)

    @classmethod
    def adjust_config(cls, config: Any, bundled: dict[str, Path]) -> None:
        """Point the config at files bundled in the checkpoint (SmolVLA's VLM directory)."""


def load_lerobot_weights(policy: nn.Module, path: Path) -> None:
    """Strict load (LeRobot's from_pretrained would print and return random weights instead).

    Tensors saved once for several tied parameters count as present for all of them.
    """
    state = read_tensors(path)
    fix = getattr(policy, "_fix_pytorch_state_dict_keys", None)
    if fix is not None:  # LeRobot's own key migration for older/converted pi checkpoints
        state = fix(state, policy.config)
    state = {k if k.startswith("model.") else f"model.{k}": v for k, v in state.items()}
    try:
        missing, unexpected = policy.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise CheckpointError(f"{path}: {error}") from None
    expected = policy.state_dict()
    loaded = {expected[k].data_ptr() for k in state if k in expected}
    missing = [k for k in missing if expected[k].data_ptr() not in loaded]
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match config.json: missing {sorted(missing)[:8]}, "
                              f"unexpected {sorted(unexpected)[:8]}")


def _prefix_kv(model: nn.Module, forward: Any, prefix_embs: torch.Tensor,
               prefix_pad_masks: torch.Tensor, prefix_att_masks: torch.Tensor,
               attention_4d: bool) -> Any:
    """The prefix-only pass that fills the KV cache, as the policies' sample_actions does it."""
    from lerobot.policies.common.vla_utils import make_att_2d_masks, prepare_attention_masks_4d

    att_2d = make_att_2d_masks(prefix_pad_masks, prefix_att_masks)
    position_ids = torch.cumsum(prefix_pad_masks, dim=1) - 1
    _, past_key_values = forward(
        attention_mask=prepare_attention_masks_4d(att_2d) if attention_4d else att_2d,
        position_ids=position_ids, past_key_values=None, inputs_embeds=[prefix_embs, None],
        use_cache=True)
    return past_key_values


class _PiAdapter(LeRobotAdapter):
    """pi0 and pi0.5 (PaliGemma + Gemma expert)."""

    @classmethod
    def model_inputs(cls, policy: Any, batch: dict[str, Any]) -> dict[str, Any]:
        from lerobot.utils.constants import OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS

        policy_class = cls.policy_class()
        images, img_masks = policy_class._preprocess_images(policy, batch)
        return {"images": images, "img_masks": img_masks, "lang_tokens": batch[OBS_LANGUAGE_TOKENS],
                "lang_masks": batch[OBS_LANGUAGE_ATTENTION_MASK],
                "state": policy_class.prepare_state(policy, batch) if cls.family == "pi0" else None}

    def embed_prefix(self, inputs: dict[str, Any]) -> LeRobotPrefixCache:
        model = self.lerobot.model
        embs, pad, att = model.embed_prefix(inputs["images"], inputs["img_masks"],
                                            inputs["lang_tokens"], inputs["lang_masks"])
        model.paligemma_with_expert.paligemma.model.language_model.config._attn_implementation = "eager"
        kv = _prefix_kv(model, model.paligemma_with_expert.forward, embs, pad, att, attention_4d=True)
        return LeRobotPrefixCache(kv, pad, inputs.get("state"))

    def denoise(self, x: torch.Tensor, t: torch.Tensor, cache: LeRobotPrefixCache) -> torch.Tensor:
        kwargs = {"state": cache.state} if self.family == "pi0" else {}
        # denoise_step works on a clone of the cache (LeRobot's clone_past_key_values).
        return self.lerobot.model.denoise_step(prefix_pad_masks=cache.prefix_pad_masks,
                                               past_key_values=cache.past_key_values, x_t=x,
                                               timestep=t, **kwargs)


class PI0Adapter(_PiAdapter):
    family = "pi0"
    split_time_input = True

    @classmethod
    def policy_class(cls) -> type:
        from lerobot.policies.pi0.modeling_pi0 import PI0Policy

        return PI0Policy

    def time_input(self) -> nn.Linear:
        return self.lerobot.model.action_time_mlp_in

    def expert_modules(self) -> list[nn.Module]:
        m = self.lerobot.model
        return [m.paligemma_with_expert.gemma_expert.model, m.action_in_proj, m.action_out_proj,
                m.state_proj, m.action_time_mlp_in, m.action_time_mlp_out]


class PI05Adapter(_PiAdapter):
    family = "pi05"
    split_time_input = False

    @classmethod
    def policy_class(cls) -> type:
        from lerobot.policies.pi05.modeling_pi05 import PI05Policy

        return PI05Policy

    def time_input(self) -> nn.Linear:
        return self.lerobot.model.time_mlp_in

    def expert_modules(self) -> list[nn.Module]:
        m = self.lerobot.model
        return [m.paligemma_with_expert.gemma_expert.model, m.action_in_proj, m.action_out_proj,
                m.time_mlp_in, m.time_mlp_out]


class SmolVLAAdapter(LeRobotAdapter):
    family = "smolvla"
    split_time_input = True

    @classmethod
    def policy_class(cls) -> type:
        from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

        return SmolVLAPolicy

    @classmethod
    def adjust_config(cls, config: Any, bundled: dict[str, Path]) -> None:
        if VLM in bundled:
            config.vlm_model_name = str(bundled[VLM])
            config.load_vlm_weights = False  # the weights are in model.safetensors

    def time_input(self) -> nn.Linear:
        return self.lerobot.model.action_time_mlp_in

    def time_width(self) -> int:
        return int(self.lerobot.model.vlm_with_expert.expert_hidden_size)

    @classmethod
    def model_inputs(cls, policy: Any, batch: dict[str, Any]) -> dict[str, Any]:
        from lerobot.utils.constants import OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS

        policy_class = cls.policy_class()
        images, img_masks = policy_class.prepare_images(policy, batch)
        return {"images": images, "img_masks": img_masks, "lang_tokens": batch[OBS_LANGUAGE_TOKENS],
                "lang_masks": batch[OBS_LANGUAGE_ATTENTION_MASK],
                "state": policy_class.prepare_state(policy, batch)}

    def embed_prefix(self, inputs: dict[str, Any]) -> LeRobotPrefixCache:
        model = self.lerobot.model
        embs, pad, att = model.embed_prefix(inputs["images"], inputs["img_masks"], inputs["lang_tokens"],
                                            inputs["lang_masks"], state=inputs["state"])
        kv = _prefix_kv(model, model.vlm_with_expert.forward, embs, pad, att, attention_4d=False)
        return LeRobotPrefixCache(kv, pad, None)

    def denoise(self, x: torch.Tensor, t: torch.Tensor, cache: LeRobotPrefixCache) -> torch.Tensor:
        # SmolVLA's denoise_step appends to the cache and crops it back to the prefix afterwards.
        return self.lerobot.model.denoise_step(prefix_pad_masks=cache.prefix_pad_masks,
                                               past_key_values=cache.past_key_values, x_t=x, timestep=t)

    def expert_modules(self) -> list[nn.Module]:
        m = self.lerobot.model
        # state_proj feeds the (frozen, cached) prefix in SmolVLA, so it is not trained here.
        return [m.vlm_with_expert.lm_expert, m.action_in_proj, m.action_out_proj,
                m.action_time_mlp_in, m.action_time_mlp_out]
