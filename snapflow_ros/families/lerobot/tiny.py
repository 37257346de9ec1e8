"""Tiny LeRobot pi0 / pi0.5 / SmolVLA checkpoints, built offline, for tests and benchmarks.

Real architectures at toy size: the same classes, processors and code paths as the full models,
with random weights, a small word-level tokenizer and (SmolVLA) a small local SmolVLM config.
pi0/pi0.5 hard-code their PaliGemma/Gemma sizes, so a tiny one is built inside
`tiny_pi_architecture`, which swaps LeRobot's size lookups for the duration of construction; the
spec is stored in the checkpoint's snapflow.json so it reloads the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

# The VLM and the expert must share depth, heads (8: LeRobot hard-codes it in its training
# forward), kv heads and head_dim; the image projector must output the VLM width.
TINY_PI = {
    "vlm": {"width": 64, "depth": 2, "mlp_dim": 128, "num_heads": 8, "num_kv_heads": 1, "head_dim": 16},
    "expert": {"width": 32, "depth": 2, "mlp_dim": 64, "num_heads": 8, "num_kv_heads": 1, "head_dim": 16},
    "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
               "num_attention_heads": 2, "patch_size": 8},
}
IMAGE_SIZE = 32
FAMILIES = ("pi0", "pi05", "smolvla")


@contextlib.contextmanager
def tiny_pi_architecture(spec: dict | None) -> Iterator[None]:
    """While active, LeRobot's pi0/pi0.5 build the PaliGemma/Gemma sizes of `spec` (no-op for None)."""
    if spec is None:
        yield
        return
    from lerobot.policies.pi0 import modeling_pi0
    from lerobot.policies.pi05 import modeling_pi05

    vocab_size = spec["vocab_size"]
    saved = []
    for module in (modeling_pi0, modeling_pi05):
        real_paligemma, real_mapping = module.PaliGemmaForConditionalGenerationWithPiGemma, module.CONFIG_MAPPING
        saved.append((module, module.get_gemma_config, real_paligemma, real_mapping))

        def gemma_config(variant: str, _module=module) -> Any:
            # "gemma_2b" names the VLM slot and "gemma_300m" the expert slot in PI0Config.
            return _module.GemmaConfig(**spec["vlm" if variant == "gemma_2b" else "expert"])

        def paligemma(config: Any, _real=real_paligemma) -> Any:
            vision = config.vision_config
            for key, value in spec["vision"].items():
                setattr(vision, key, value)
            vision.projection_dim = config.text_config.hidden_size
            config.text_config.num_image_tokens = (vision.image_size // vision.patch_size) ** 2
            config.text_config.vocab_size = vocab_size
            return _real(config)

        class Mapping:  # the expert's (unused) lm_head gets the small vocabulary too
            def __getitem__(self, key: str, _real=real_mapping) -> Any:
                config_class = _real[key]
                if key == "gemma":
                    return lambda **kw: config_class(**{**kw, "vocab_size": vocab_size})
                return config_class

        module.get_gemma_config = gemma_config
        module.PaliGemmaForConditionalGenerationWithPiGemma = paligemma
        module.CONFIG_MAPPING = Mapping()
    try:
        yield
    finally:
        for module, get_config, real_paligemma, real_mapping in saved:
            module.get_gemma_config = get_config
            module.PaliGemmaForConditionalGenerationWithPiGemma = real_paligemma
            module.CONFIG_MAPPING = real_mapping


def build_tokenizer(directory: Path, extra_words: list[str]) -> Any:
    """A word-level tokenizer (tokenizers library) with numbers 0..255 for pi0.5's state bins."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<bos>", "<eos>", "<fake_token_around_image>", "<global-img>",
                "<image>", "<end_of_utterance>"]
    words = [str(i) for i in range(256)] + ["Task", "State", "Action", ":", ",", ";", ".", "\n"]
    words += [w for w in extra_words if w not in words]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(specials + words))}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(" ", behavior="removed"),
        pre_tokenizers.Split("\n", behavior="isolated"),  # SmolVLA/pi0 append "\n" to the task
        pre_tokenizers.Punctuation(),
    ])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>", bos_token="<bos>",
        eos_token="<end_of_utterance>",
        extra_special_tokens={"fake_image_token": "<fake_token_around_image>",
                              "global_image_token": "<global-img>", "image_token": "<image>",
                              "end_of_utterance_token": "<end_of_utterance>"})
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(directory)
    return fast


def build_smolvlm_directory(directory: Path, tokenizer: Any) -> None:
    """A local SmolVLM config + processor (what SmolVLA reads from `vlm_model_name`)."""
    from transformers import SmolVLMConfig, SmolVLMImageProcessor, SmolVLMProcessor
    from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

    patch, scale = 16, 2
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(size={"longest_edge": 64}, max_image_size={"longest_edge": 64},
                                              do_image_splitting=False),
        tokenizer=tokenizer, video_processor=SmolVLMVideoProcessor(),
        image_seq_len=(64 // patch) ** 2 // scale**2)
    processor.save_pretrained(directory)
    SmolVLMConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 64, "patch_size": patch},
        text_config={"model_type": "llama", "vocab_size": len(tokenizer), "hidden_size": 64,
                     "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 512,
                     "rms_norm_eps": 1e-5, "pad_token_id": tokenizer.pad_token_id},
        scale_factor=scale, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
    ).save_pretrained(directory)


def _stats(samples: torch.Tensor) -> dict[str, torch.Tensor]:
    flat = samples.reshape(-1, samples.shape[-1]).float()
    return {"mean": flat.mean(0), "std": flat.std(0, unbiased=False).clamp_min(1e-6),
            "min": flat.min(0).values, "max": flat.max(0).values,
            "q01": torch.quantile(flat, 0.01, dim=0), "q99": torch.quantile(flat, 0.99, dim=0)}


@contextlib.contextmanager
def _offline_tokenizer(tokenizer: Any) -> Iterator[None]:
    """LeRobot's processor factories load a tokenizer by hub name at construction; hand them ours."""
    from lerobot.processor import tokenizer_processor

    real = tokenizer_processor.AutoTokenizer

    class Local:
        @staticmethod
        def from_pretrained(*args: Any, **kwargs: Any) -> Any:
            return tokenizer

    tokenizer_processor.AutoTokenizer = Local
    try:
        yield
    finally:
        tokenizer_processor.AutoTokenizer = real


def build_tiny_teacher(family: str, output: Path, *, states: torch.Tensor, actions: torch.Tensor,
                       cameras: tuple[str, ...], instructions: list[str], chunk_size: int,
                       seed: int = 0) -> Path:
    """Writes a LeRobot checkpoint directory of a tiny random `family` policy (plus the bundled
    tokenizer / VLM files so it loads offline) and returns it. Stats come from states/actions."""
    import tempfile

    from lerobot.configs import FeatureType, PolicyFeature

    from snapflow_ros.errors import ConfigError
    from snapflow_ros.families.lerobot.adapter import TOKENIZER, VLM
    from snapflow_ros.families.registry import family as family_class
    from snapflow_ros.policy.checkpoint import save_policy

    if family not in FAMILIES:
        raise ConfigError(f"family must be one of {FAMILIES}, got {family!r}")
    torch.manual_seed(seed)
    state_dim, action_dim = states.shape[-1], actions.shape[-1]
    features = {
        "input_features": {
            **{f"observation.images.{c}": PolicyFeature(FeatureType.VISUAL, (3, IMAGE_SIZE, IMAGE_SIZE))
               for c in cameras},
            "observation.state": PolicyFeature(FeatureType.STATE, (state_dim,)),
        },
        "output_features": {"action": PolicyFeature(FeatureType.ACTION, (action_dim,))},
    }
    stats = {"observation.state": _stats(states), "action": _stats(actions)}
    words = sorted({w for text in instructions for w in text.replace(",", " ").split()})
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        tokenizer = build_tokenizer(scratch / TOKENIZER, words)
        bundled = {TOKENIZER: scratch / TOKENIZER}
        tiny = None
        if family == "smolvla":
            from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
            from lerobot.policies.smolvla.processor_smolvla import make_smolvla_pre_post_processors

            build_smolvlm_directory(scratch / VLM, tokenizer)
            bundled[VLM] = scratch / VLM
            config = SmolVLAConfig(
                device="cpu", vlm_model_name=str(scratch / VLM), load_vlm_weights=False, num_vlm_layers=2,
                num_expert_layers=-1, self_attn_every_n_layers=2, expert_width_multiplier=0.75,
                attention_mode="cross_attn", chunk_size=chunk_size, n_action_steps=chunk_size,
                max_state_dim=8, max_action_dim=8, resize_imgs_with_padding=(64, 64),
                tokenizer_max_length=16, push_to_hub=False, **features)
            make_processors = make_smolvla_pre_post_processors
        else:
            tiny = {**TINY_PI, "vocab_size": len(tokenizer)}
            if family == "pi0":
                from lerobot.policies.pi0.configuration_pi0 import PI0Config as Config
                from lerobot.policies.pi0.processor_pi0 import make_pi0_pre_post_processors as make_processors
            else:
                from lerobot.policies.pi05.configuration_pi05 import PI05Config as Config
                from lerobot.policies.pi05.processor_pi05 import make_pi05_pre_post_processors as make_processors
            config = Config(paligemma_variant="gemma_2b", action_expert_variant="gemma_300m",
                            dtype="float32", chunk_size=chunk_size, n_action_steps=chunk_size,
                            max_state_dim=8, max_action_dim=8, image_resolution=(IMAGE_SIZE, IMAGE_SIZE),
                            tokenizer_max_length=48, device="cpu", push_to_hub=False, **features)
        adapter_class = family_class(family)
        with tiny_pi_architecture(tiny):
            policy = adapter_class.policy_class()(config)
        with torch.no_grad():
            for name, p in policy.named_parameters():
                # Zero-initialised conditioning (pi0.5's adaRMS `dense`) would make a random
                # model ignore time; a trained one does not, so neither does the tiny one.
                if p.abs().sum() == 0 and p.ndim == 2:
                    p.normal_(0.0, 0.02)
        with _offline_tokenizer(tokenizer):
            pre, post = make_processors(config, dataset_stats=stats)
        adapter = adapter_class(policy, pre, post, bundled, tiny)
        return save_policy(adapter, output, {"tiny": True, "family": family, "seed": seed})
