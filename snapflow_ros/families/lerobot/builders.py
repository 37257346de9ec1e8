"""LeRobot pi0 / pi0.5 / SmolVLA checkpoints with random weights, built offline, at any size of
architectures.py (tiny for tests, width for CI, full = the published architecture).

The same classes, processors and code paths as a real checkpoint, with a small word-level
tokenizer and (SmolVLA) a local SmolVLM config + processor, bundled so the checkpoint loads
offline. A smaller pi0/pi0.5 is built by construction.pi_architecture; its spec is stored in the
checkpoint's snapflow.json so it reloads the same way (none for full size: LeRobot's own).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from snapflow_ros.errors import ConfigError
from snapflow_ros.families.lerobot.adapter import ADAPTERS
from snapflow_ros.families.lerobot.architectures import PI, SIZES, SMOLVLA, TINY_POLICY
from snapflow_ros.families.lerobot.construction import construct_policy
from snapflow_ros.families.lerobot.processor import TOKENIZER, VLM
from snapflow_ros.files import save_policy

FAMILIES = ("pi0", "pi05", "smolvla")
DTYPES = ("float32", "bfloat16")


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


def build_smolvlm_directory(directory: Path, tokenizer: Any, spec: dict) -> None:
    """A local SmolVLM config + processor (what SmolVLA reads from `vlm_model_name`)."""
    from transformers import SmolVLMConfig, SmolVLMImageProcessor, SmolVLMProcessor
    from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

    vision, scale = spec["vision"], spec["scale_factor"]
    size = vision["image_size"]
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(size={"longest_edge": size}, max_image_size={"longest_edge": size},
                                              do_image_splitting=False),
        tokenizer=tokenizer, video_processor=SmolVLMVideoProcessor(),
        image_seq_len=(size // vision["patch_size"]) ** 2 // scale**2)
    processor.save_pretrained(directory)
    text = {**spec["text"], "vocab_size": spec["text"]["vocab_size"] or len(tokenizer)}
    SmolVLMConfig(
        vision_config=vision, text_config={"model_type": "llama", **text, "pad_token_id": tokenizer.pad_token_id},
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


def build_lerobot_checkpoint(family: str, output: Path, *, states: torch.Tensor, actions: torch.Tensor,
                             cameras: tuple[str, ...], instructions: list[str], size: str = "tiny",
                             dtype: str = "float32", chunk_size: int | None = None, seed: int = 0) -> Path:
    """Writes a LeRobot checkpoint directory of a random `family` policy of `size` (plus the
    bundled tokenizer / VLM files so it loads offline) and returns it. Stats come from
    states/actions. chunk_size: LeRobot's default (50) unless given."""
    from lerobot.configs import FeatureType, PolicyFeature

    for name, value, choices in (("family", family, FAMILIES), ("size", size, SIZES), ("dtype", dtype, DTYPES)):
        if value not in choices:
            raise ConfigError(f"{name} must be one of {choices}, got {value!r}")
    if family == "smolvla" and dtype != "float32":
        raise ConfigError("SmolVLA has no dtype setting in LeRobot (it builds float32 when the VLM "
                          "weights come from the checkpoint); build it with dtype float32")
    torch.manual_seed(seed)
    spec = (SMOLVLA if family == "smolvla" else PI)[size]
    image = spec["vision"]["image_size"] if family == "smolvla" else spec["image_size"]
    features = {
        "input_features": {
            **{f"observation.images.{c}": PolicyFeature(FeatureType.VISUAL, (3, image, image)) for c in cameras},
            "observation.state": PolicyFeature(FeatureType.STATE, (states.shape[-1],)),
        },
        "output_features": {"action": PolicyFeature(FeatureType.ACTION, (actions.shape[-1],))},
    }
    settings: dict[str, Any] = {**(TINY_POLICY[family] if size == "tiny" else {}), **features,
                                "device": "cpu", "push_to_hub": False}
    if chunk_size is not None:
        settings |= {"chunk_size": chunk_size, "n_action_steps": chunk_size}
    stats = {"observation.state": _stats(states), "action": _stats(actions)}
    words = sorted({w for text in instructions for w in text.replace(",", " ").split()})
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        tokenizer = build_tokenizer(scratch / TOKENIZER, words)
        bundled = {TOKENIZER: scratch / TOKENIZER}
        architecture = None  # full size: LeRobot's own sizes, nothing to record
        if family == "smolvla":
            from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig as Config
            from lerobot.policies.smolvla.processor_smolvla import make_smolvla_pre_post_processors as make_processors

            build_smolvlm_directory(scratch / VLM, tokenizer, spec)
            bundled[VLM] = scratch / VLM
            settings |= {"vlm_model_name": str(scratch / VLM), "load_vlm_weights": False,
                         "num_vlm_layers": spec["num_vlm_layers"], "resize_imgs_with_padding": (image, image)}
        else:
            if size != "full":
                architecture = {**spec, "vocab_size": spec["vocab_size"] or len(tokenizer)}
            if family == "pi0":
                from lerobot.policies.pi0.configuration_pi0 import PI0Config as Config
                from lerobot.policies.pi0.processor_pi0 import make_pi0_pre_post_processors as make_processors
            else:
                from lerobot.policies.pi05.configuration_pi05 import PI05Config as Config
                from lerobot.policies.pi05.processor_pi05 import make_pi05_pre_post_processors as make_processors
            settings |= {"paligemma_variant": "gemma_2b", "action_expert_variant": "gemma_300m",
                         "dtype": dtype, "image_resolution": (image, image)}
        config = Config(**settings)
        adapter_class = ADAPTERS[family]
        policy = construct_policy(adapter_class.policy_class(), config, architecture)
        with torch.no_grad():
            for p in policy.parameters():
                # Zero-initialised conditioning (pi0.5's adaRMS `dense`) would make a random
                # model ignore time; a trained one does not, so neither does a random one here.
                if p.ndim == 2 and not p.any():
                    p.normal_(0.0, 0.02)
        with _offline_tokenizer(tokenizer):
            pre, post = make_processors(config, dataset_stats=stats)
        adapter = adapter_class(policy, pre, post, bundled, architecture)
        return save_policy(adapter, output, {"random_weights": True, "family": family, "size": size,
                                             "dtype": dtype, "seed": seed})
