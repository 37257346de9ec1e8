"""The published architectures of pi0 / pi0.5 / SmolVLA, and the smaller sizes derived from them.

    full   the published architecture exactly, as lerobot 0.6.1 builds it
    width  full widths and full vocabulary, one or two layers per tower (CI: over the 2 GB
           protobuf limit in float32, small enough for a 2-core machine)
    tiny   toy widths for unit tests

Sources. pi0 / pi0.5: lerobot/policies/pi0/modeling_pi0.py `get_gemma_config` (after openpi's
gemma.py `get_config`) and `PaliGemmaWithExpertModel` (vocabulary 257152, SigLIP intermediate
4304 over Hugging Face PaliGemmaConfig's so400m/14 default, projection 2048); PI0Config /
PI05Config defaults (chunk 50, 32-dim padding, 224 px, tokens 48 / 200). SmolVLA:
lerobot/policies/smolvla/configuration_smolvla.py (16 VLM layers, expert width 0.75,
cross-attention with self-attention every 2nd layer, 512 px) over the published config.json of
HuggingFaceTB/SmolVLM2-500M-Video-Instruct (text: Llama 960 / 2560, 32 layers, 15 heads, 5 kv
heads, vocabulary 49280, rope theta 100000; vision: SigLIP 768 / 3072, 12 layers, 12 heads,
patch 16, 512 px; pixel shuffle 4). test_lerobot_architectures.py checks the pi numbers against
what LeRobot itself builds.
"""

from __future__ import annotations

SIZES = ("tiny", "width", "full")

# --- pi0 / pi0.5: PaliGemma (Gemma 2B + SigLIP so400m/14) + Gemma 300M action expert -----------
GEMMA_2B = {"width": 2048, "depth": 18, "mlp_dim": 16384, "num_heads": 8, "num_kv_heads": 1, "head_dim": 256}
GEMMA_300M = {"width": 1024, "depth": 18, "mlp_dim": 4096, "num_heads": 8, "num_kv_heads": 1, "head_dim": 256}
SIGLIP_SO400M = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
                 "num_attention_heads": 16, "patch_size": 14}
PALIGEMMA_VOCAB = 257152

# The VLM and the expert must share depth, heads (8: LeRobot hard-codes it in its joint
# attention), kv heads and head_dim; the image projector outputs the VLM width.
PI = {
    "full": {"vlm": GEMMA_2B, "expert": GEMMA_300M, "vision": SIGLIP_SO400M,
             "vocab_size": PALIGEMMA_VOCAB, "image_size": 224},
    "width": {"vlm": {**GEMMA_2B, "depth": 1}, "expert": {**GEMMA_300M, "depth": 1},
              "vision": {**SIGLIP_SO400M, "num_hidden_layers": 1},
              "vocab_size": PALIGEMMA_VOCAB, "image_size": 224},
    "tiny": {"vlm": {"width": 64, "depth": 2, "mlp_dim": 128, "num_heads": 8, "num_kv_heads": 1, "head_dim": 16},
             "expert": {"width": 32, "depth": 2, "mlp_dim": 64, "num_heads": 8, "num_kv_heads": 1, "head_dim": 16},
             "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                        "num_attention_heads": 2, "patch_size": 8},
             "vocab_size": None, "image_size": 32},  # vocab: the tiny tokenizer's
}

# --- SmolVLA: SmolVLM2-500M truncated to 16 text layers + an expert of 0.75 its width -----------
SMOLVLM2_500M_TEXT = {"hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32,
                      "num_attention_heads": 15, "num_key_value_heads": 5, "head_dim": 64,
                      "vocab_size": 49280, "rope_theta": 100000.0, "max_position_embeddings": 8192,
                      "rms_norm_eps": 1e-5}
SMOLVLM2_500M_VISION = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                        "num_attention_heads": 12, "patch_size": 16, "image_size": 512}
SMOLVLM2_500M_SCALE_FACTOR = 4  # pixel shuffle: (512 / 16)^2 / 4^2 = 64 tokens per image

SMOLVLA = {
    "full": {"text": SMOLVLM2_500M_TEXT, "vision": SMOLVLM2_500M_VISION,
             "scale_factor": SMOLVLM2_500M_SCALE_FACTOR, "num_vlm_layers": 16},
    "width": {"text": SMOLVLM2_500M_TEXT, "vision": {**SMOLVLM2_500M_VISION, "num_hidden_layers": 1},
              "scale_factor": SMOLVLM2_500M_SCALE_FACTOR, "num_vlm_layers": 2},
    "tiny": {"text": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                      "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
                      "vocab_size": None, "max_position_embeddings": 512, "rms_norm_eps": 1e-5},
             "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                        "num_attention_heads": 2, "patch_size": 16, "image_size": 64},
             "scale_factor": 2, "num_vlm_layers": 2},
}

# Policy settings that differ from LeRobot's defaults at toy size (tiny data, short prompts).
TINY_POLICY = {"pi0": {"max_state_dim": 8, "max_action_dim": 8, "tokenizer_max_length": 48},
               "pi05": {"max_state_dim": 8, "max_action_dim": 8, "tokenizer_max_length": 48},
               "smolvla": {"max_state_dim": 8, "max_action_dim": 8, "tokenizer_max_length": 16}}
