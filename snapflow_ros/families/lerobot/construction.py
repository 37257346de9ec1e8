"""LeRobot's pi0 / pi0.5 / SmolVLA policy objects as a checkpoint's config asks for them: at a
size of architectures.py and, for bfloat16, built in bfloat16 directly.

pi0/pi0.5 hard-code their PaliGemma/Gemma sizes, so a smaller one is built inside
`pi_architecture`, which swaps LeRobot's size lookups during construction. Used to load a
checkpoint (adapter) and to build a random one (builders) alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch


@contextlib.contextmanager
def pi_architecture(spec: dict | None) -> Iterator[None]:
    """While active, LeRobot's pi0/pi0.5 build the PaliGemma/Gemma sizes of `spec` (no-op for
    None: LeRobot's own gemma_2b / gemma_300m / so400m)."""
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

        class Mapping:  # the expert's (unused) lm_head gets the vocabulary too
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


def construct_policy(policy_class: type, config: Any, architecture: dict | None) -> Any:
    """LeRobot's policy for `config`; a bfloat16 one is built in bfloat16 directly (LeRobot
    builds float32 and casts: 16 GB for pi0.5, over half this machine's memory), with LeRobot's
    float32 islands, and the projections and time MLPs outside the VLM/expert in float32."""
    low = getattr(config, "dtype", "float32") == "bfloat16"
    previous = torch.get_default_dtype()
    if low:
        torch.set_default_dtype(torch.bfloat16)
    try:
        with pi_architecture(architecture):
            policy = policy_class(config)
    finally:
        torch.set_default_dtype(previous)
    if low:
        for name, module in policy.model.named_children():
            if name != "paligemma_with_expert":
                module.float()
    return policy
