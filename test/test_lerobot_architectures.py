"""architectures.py against what lerobot 0.6.1 itself builds (on the meta device: no weights)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("lerobot")

from lerobot.policies.pi0 import modeling_pi0  # noqa: E402
from lerobot.policies.pi05.configuration_pi05 import PI05Config  # noqa: E402
from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig  # noqa: E402

from snapflow_ros.families.lerobot import architectures as arch  # noqa: E402
from snapflow_ros.families.lerobot.construction import pi_architecture  # noqa: E402


def build_pi_on_meta() -> modeling_pi0.PaliGemmaWithExpertModel:
    """As PI05Pytorch builds it; the size lookups go through the module (pi_architecture swaps them)."""
    gemma = modeling_pi0.get_gemma_config
    with torch.device("meta"):
        return modeling_pi0.PaliGemmaWithExpertModel(gemma("gemma_2b"), gemma("gemma_300m"),
                                                     use_adarms=[False, True], precision="float32")


def fields(config: object, like: dict) -> dict:
    return {key: getattr(config, key) for key in like}


def test_pi_numbers_are_lerobots() -> None:
    assert fields(modeling_pi0.get_gemma_config("gemma_2b"), arch.GEMMA_2B) == arch.GEMMA_2B
    assert fields(modeling_pi0.get_gemma_config("gemma_300m"), arch.GEMMA_300M) == arch.GEMMA_300M
    model = build_pi_on_meta()
    vision = model.paligemma.config.vision_config
    assert fields(vision, arch.SIGLIP_SO400M) == arch.SIGLIP_SO400M
    assert model.paligemma.config.text_config.vocab_size == arch.PALIGEMMA_VOCAB
    full = arch.PI["full"]
    assert vision.image_size == full["image_size"] == PI05Config().image_resolution[0]
    assert (full["vlm"], full["expert"], full["vision"]) == (arch.GEMMA_2B, arch.GEMMA_300M, arch.SIGLIP_SO400M)


def test_width_pi_is_full_width_over_the_protobuf_limit() -> None:
    with pi_architecture(arch.PI["width"]):
        model = build_pi_on_meta()
    text, vision = model.paligemma.config.text_config, model.paligemma.config.vision_config
    assert (text.hidden_size, text.intermediate_size, text.num_hidden_layers) == (2048, 16384, 1)
    assert text.vocab_size == arch.PALIGEMMA_VOCAB and vision.num_hidden_layers == 1
    assert (vision.hidden_size, vision.intermediate_size) == (1152, 4304)
    assert model.gemma_expert.config.hidden_size == 1024
    # The prefix graph alone (VLM + SigLIP, with the 257152 x 2048 embedding) is over 2 GiB in fp32.
    prefix_bytes = 4 * sum(p.numel() for p in model.paligemma.parameters())
    assert prefix_bytes > 2**31
    # The context manager restores LeRobot's own sizes.
    assert build_pi_on_meta().paligemma.config.text_config.num_hidden_layers == arch.GEMMA_2B["depth"]


def test_smolvla_numbers_are_lerobots() -> None:
    config = SmolVLAConfig()
    full = arch.SMOLVLA["full"]
    assert full["num_vlm_layers"] == config.num_vlm_layers == 16
    assert config.expert_width_multiplier == 0.75
    assert full["vision"]["image_size"] == config.resize_imgs_with_padding[0]
    assert config.vlm_model_name == "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"
