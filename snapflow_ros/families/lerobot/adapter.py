"""LeRobot pi0 / pi0.5 / SmolVLA policies behind the FlowPolicy contract.

What is LeRobot's and reused as is: the checkpoint's pre/post-processor pipelines (normalisation,
tokenisation, pi0.5's state-in-prompt), the policies' own image/state/action preparation, the
prefix embedding and expert layers. What SnapFlow adds: phi(s) (TargetTimeMLP), passed
explicitly through the expert pass (suffix.py) and added to the sinusoidal time embedding where
it enters the policy's own time MLP; no checkpoint key changes.
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
from snapflow_ros.families.lerobot.construction import construct_policy
from snapflow_ros.families.lerobot.processor import (
    IMAGE_PREFIX,
    POSTPROCESSOR,
    PREPROCESSOR,
    TOKENIZER,
    VLM,
    LeRobotProcessor,
    hub_names,
    load_processors,
    offline_files,
    static_token_padding,
)
from snapflow_ros.families.lerobot.suffix import (
    gemma_expert,
    pi0_suffix,
    pi05_suffix,
    smolvla_suffix,
    suffix_attention,
)
from snapflow_ros.files import CONFIG, WEIGHTS, load_state_strict, read_tensors
from snapflow_ros.flow.target_time import TargetTimeMLP
from snapflow_ros.policy.contract import FlowPolicy, RawBatch

TARGET_TIME = "snapflow_target_time.safetensors"  # phi(s) of a SnapFlow student
SNAPFLOW = "snapflow.json"                        # what LeRobot does not know about this checkpoint


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

    def __init__(self, policy: nn.Module, preprocessor: Any, postprocessor: Any,
                 bundled: dict[str, Path] | None = None, architecture: dict | None = None) -> None:
        super().__init__()
        self.lerobot = policy
        self.preprocessor = preprocessor
        self.postprocessor = postprocessor
        self.bundled = bundled or {}  # TOKENIZER / VLM directories copied into saved checkpoints
        self.architecture = architecture  # sizes LeRobot does not derive from config.json (construction.py)
        config = policy.config
        self.chunk_size = int(config.chunk_size)
        self.action_dim = int(config.output_features["action"].shape[0])
        self.cameras = tuple(k[len(IMAGE_PREFIX):] for k in config.image_features)
        self.target_time = TargetTimeMLP(self.time_width(), config.min_period, config.max_period)
        static_token_padding(preprocessor)

    # --- family specifics -------------------------------------------------------------------
    @classmethod
    def policy_class(cls) -> type:
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

    def denoise(self, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor,
                cache: LeRobotPrefixCache) -> torch.Tensor:
        """One expert pass with phi(s) (suffix.py)."""
        raise NotImplementedError

    def expert_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def backbone(self) -> nn.Module:
        """The vision-language model: frozen by SnapFlow, so always in eval mode."""
        raise NotImplementedError

    def low_precision_modules(self) -> list[nn.Module]:
        """What LeRobot keeps in bfloat16 (the VLM and the expert); projections stay float32."""
        raise NotImplementedError

    def keep_float32(self) -> None:
        """Restore the float32 islands of LeRobot's bfloat16 layout after a cast."""

    # --- FlowPolicy ----------------------------------------------------------------------------
    @property
    def noise_dim(self) -> int:
        return int(self.lerobot.config.max_action_dim)

    @property
    def input_dtype(self) -> torch.dtype:
        return torch.float32  # LeRobot casts inputs to each module's dtype itself

    def to_precision(self, dtype: torch.dtype) -> None:
        for module in self.low_precision_modules():
            module.to(dtype)
        self.keep_float32()

    def train(self, mode: bool = True) -> LeRobotAdapter:
        super().train(mode)
        # Frozen, and in train mode LeRobot's gradient_checkpointing would also switch off the
        # prefix KV cache (use_cache=False) that every expert pass attends to.
        self.backbone().eval()
        return self

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
        return self.denoise(x, t, s.to(t.device), cache)

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
        meta = {"family": self.family, "target_time": TARGET_TIME, "architecture": self.architecture}
        (directory / SNAPFLOW).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: Path, device: str | torch.device = "cpu",
                        tokenizer: Path | None = None) -> LeRobotAdapter:
        """tokenizer: where the tokenizer (SmolVLA: the VLM config + processor) is when the
        checkpoint bundles none; else the bundled one, else the local Hugging Face cache."""
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
        bundled = offline_files(directory, cls.bundled_names(), hub_names(directory, config), tokenizer)
        cls.adjust_config(config, bundled)
        architecture = meta.get("architecture", meta.get("tiny_architecture"))  # older name
        policy = construct_policy(policy_class, config, architecture)
        load_lerobot_weights(policy, directory / WEIGHTS)
        preprocessor, postprocessor = load_processors(directory, config.device, bundled.get(TOKENIZER))
        adapter = cls(policy, preprocessor, postprocessor, bundled, architecture)
        if (directory / TARGET_TIME).is_file():
            load_state_strict(adapter.target_time, read_tensors(directory / TARGET_TIME), directory)
        return adapter.to(device)

    @classmethod
    def adjust_config(cls, config: Any, bundled: dict[str, Path]) -> None:
        """Point the config at files bundled in the checkpoint (SmolVLA's VLM directory)."""

    @classmethod
    def bundled_names(cls) -> tuple[str, ...]:
        """The directories a checkpoint needs to load offline (and every student carries)."""
        return (TOKENIZER,)


class _Stored:
    """A tensor of the weight file, named by its key there; read only when copied in."""

    def __init__(self, key: str) -> None:
        self.key = key

    def clone(self) -> _Stored:  # LeRobot's key migration clones tied values
        return self


def load_lerobot_weights(policy: nn.Module, path: Path) -> None:
    """Strict load (LeRobot's from_pretrained would print and return random weights instead),
    one tensor at a time: peak memory stays the model plus its largest tensor.

    Tensors saved once for several tied parameters count as present for all of them.
    """
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"{path.parent}: {path.name} missing")
    try:
        handle = safe_open(str(path), framework="pt")
    except Exception as error:  # safetensors raises several types for corrupt files
        raise CheckpointError(f"{path}: unreadable ({error})") from None
    with handle as weights:
        stored: dict[str, Any] = {key: _Stored(key) for key in weights.keys()}
        fix = getattr(policy, "_fix_pytorch_state_dict_keys", None)
        if fix is not None:  # LeRobot's own key migration for older/converted pi checkpoints
            stored = fix(stored, policy.config)
        stored = {k if k.startswith("model.") else f"model.{k}": v for k, v in stored.items()}
        expected = policy.state_dict()  # detached views of the parameters: copy_ fills them
        unexpected = sorted(k for k in stored if k not in expected)
        mismatched, loaded = [], set()
        with torch.no_grad():
            for name, item in stored.items():
                if name not in expected:
                    continue
                tensor = weights.get_tensor(item.key)
                if tuple(tensor.shape) != tuple(expected[name].shape):
                    mismatched.append(f"{name} {tuple(tensor.shape)} vs {tuple(expected[name].shape)}")
                    continue
                expected[name].copy_(tensor)
                loaded.add(expected[name].data_ptr())
    missing = sorted(k for k in expected if k not in stored and expected[k].data_ptr() not in loaded)
    if missing or unexpected or mismatched:
        raise CheckpointError(f"{path}: weights do not match config.json: missing {missing[:8]}, "
                              f"unexpected {unexpected[:8]}, shape-mismatched {mismatched[:8]}")


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
        images = inputs["images"]
        vlm_dtype = model.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight.dtype
        if vlm_dtype == torch.float16:
            # LeRobot casts the prefix to the VLM's dtype only for bfloat16 (PiGemmaModel.forward);
            # in float16 the image embeddings must already come out in it (embed_image keeps
            # the dtype of its input).
            images = [image.to(vlm_dtype) for image in images]
        embs, pad, att = model.embed_prefix(images, inputs["img_masks"],
                                            inputs["lang_tokens"], inputs["lang_masks"])
        model.paligemma_with_expert.paligemma.model.language_model.config._attn_implementation = "eager"
        kv = _prefix_kv(model, model.paligemma_with_expert.forward, embs, pad, att, attention_4d=True)
        return LeRobotPrefixCache(kv, pad, inputs.get("state"))

    def denoise(self, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor,
                cache: LeRobotPrefixCache) -> torch.Tensor:
        from lerobot.policies.common.vla_utils import prepare_attention_masks_4d

        model = self.lerobot.model
        if self.family == "pi0":
            embs, pad, att, condition = pi0_suffix(model, cache.state, x, t, s, self.target_time)
        else:
            embs, pad, att, condition = pi05_suffix(model, x, t, s, self.target_time)
        mask, position_ids = suffix_attention(cache.prefix_pad_masks, pad, att)
        expert = model.paligemma_with_expert.gemma_expert.model
        expert.config._attn_implementation = "eager"  # as LeRobot's denoise_step sets it
        out = gemma_expert(expert, embs,
                           prepare_attention_masks_4d(mask), position_ids,
                           [(keys, values) for keys, values, *_ in cache.past_key_values], condition,
                           checkpoint_layers=self.gradient_checkpointing and self.training)
        # LeRobot: the expert output goes to action_out_proj in float32.
        return model.action_out_proj(out[:, -self.chunk_size:].to(torch.float32))

    # LeRobot's own `gradient_checkpointing` (config.json) is the flag: expert layers are
    # recomputed one at a time in backward (gemma_expert), with its _apply_checkpoint pieces.
    checkpoints_layers = True

    @property
    def gradient_checkpointing(self) -> bool:
        return bool(self.lerobot.model.gradient_checkpointing_enabled)

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, enabled: bool) -> None:
        self.lerobot.model.gradient_checkpointing_enabled = bool(enabled)

    def backbone(self) -> nn.Module:
        return self.lerobot.model.paligemma_with_expert.paligemma

    def low_precision_modules(self) -> list[nn.Module]:
        return [self.lerobot.model.paligemma_with_expert]

    def keep_float32(self) -> None:
        # PaliGemmaWithExpertModel.to_bfloat16_for_selected_params keeps these in float32.
        islands = ("vision_tower", "multi_modal_projector", "input_layernorm",
                   "post_attention_layernorm", "model.norm")
        for name, param in self.lerobot.model.paligemma_with_expert.named_parameters():
            if any(island in name for island in islands):
                param.data = param.data.to(torch.float32)


class PI0Adapter(_PiAdapter):
    family = "pi0"

    @classmethod
    def policy_class(cls) -> type:
        from lerobot.policies.pi0.modeling_pi0 import PI0Policy

        return PI0Policy

    def expert_modules(self) -> list[nn.Module]:
        m = self.lerobot.model
        return [m.paligemma_with_expert.gemma_expert.model, m.action_in_proj, m.action_out_proj,
                m.state_proj, m.action_time_mlp_in, m.action_time_mlp_out]


class PI05Adapter(_PiAdapter):
    family = "pi05"

    @classmethod
    def policy_class(cls) -> type:
        from lerobot.policies.pi05.modeling_pi05 import PI05Policy

        return PI05Policy

    def expert_modules(self) -> list[nn.Module]:
        m = self.lerobot.model
        return [m.paligemma_with_expert.gemma_expert.model, m.action_in_proj, m.action_out_proj,
                m.time_mlp_in, m.time_mlp_out]


class SmolVLAAdapter(LeRobotAdapter):
    family = "smolvla"

    @classmethod
    def policy_class(cls) -> type:
        from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

        return SmolVLAPolicy

    @classmethod
    def bundled_names(cls) -> tuple[str, ...]:
        return (TOKENIZER, VLM)

    @classmethod
    def adjust_config(cls, config: Any, bundled: dict[str, Path]) -> None:
        if VLM in bundled:
            config.vlm_model_name = str(bundled[VLM])
            config.load_vlm_weights = False  # the weights are in model.safetensors

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

    def denoise(self, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor,
                cache: LeRobotPrefixCache) -> torch.Tensor:
        model = self.lerobot.model
        embs, pad, att = smolvla_suffix(model, x, t, s, self.target_time)
        mask, position_ids = suffix_attention(cache.prefix_pad_masks, pad, att)
        prefix_len = cache.prefix_pad_masks.shape[1]
        out, _ = model.vlm_with_expert.forward(attention_mask=mask, position_ids=position_ids,
                                               past_key_values=cache.past_key_values,
                                               inputs_embeds=[None, embs], use_cache=model.config.use_cache)
        # Its self-attention layers append the suffix K/V to the cache; restore the prefix.
        cache.past_key_values.crop(prefix_len)
        return model.action_out_proj(out[1][:, -self.chunk_size:].to(torch.float32))

    def backbone(self) -> nn.Module:
        return self.lerobot.model.vlm_with_expert.vlm

    def low_precision_modules(self) -> list[nn.Module]:
        return [self.lerobot.model.vlm_with_expert]

    def expert_modules(self) -> list[nn.Module]:
        m = self.lerobot.model
        # state_proj feeds the (frozen, cached) prefix in SmolVLA, so it is not trained here.
        return [m.vlm_with_expert.lm_expert, m.action_in_proj, m.action_out_proj,
                m.action_time_mlp_in, m.action_time_mlp_out]


ADAPTERS: dict[str, type[LeRobotAdapter]] = {"pi0": PI0Adapter, "pi05": PI05Adapter, "smolvla": SmolVLAAdapter}
