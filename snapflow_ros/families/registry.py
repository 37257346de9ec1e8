"""Policy families by the "type" written in a checkpoint's config.json, and loading a checkpoint
as the policy of its family.

A family is a FlowPolicy class with `from_pretrained(directory, device)` and
`save_pretrained(directory)`. The registry imports the families; they import only
snapflow_ros.files, never this module. The LeRobot families import lerobot itself only when
one of their checkpoints is loaded or built.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import torch

from snapflow_ros.errors import CheckpointError
from snapflow_ros.families.builtin import BuiltinVLA
from snapflow_ros.families.lerobot import ADAPTERS
from snapflow_ros.files import read_config
from snapflow_ros.policy.contract import FlowPolicy

FAMILIES: dict[str, type[FlowPolicy]] = {"builtin": BuiltinVLA, **ADAPTERS}


def family(type_name: str) -> type[FlowPolicy]:
    if type_name not in FAMILIES:
        close = difflib.get_close_matches(str(type_name), FAMILIES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise CheckpointError(
            f"unknown policy type '{type_name}'{hint}; known types: {sorted(FAMILIES)}")
    return FAMILIES[type_name]


def load_policy(directory: Path, device: str | torch.device = "cpu", tokenizer: Path | None = None) -> FlowPolicy:
    """The policy of a checkpoint directory, by its config.json "type", in eval mode.

    tokenizer: a local tokenizer (SmolVLA: VLM config + processor) directory for a LeRobot
    checkpoint that has none bundled and none in the local Hugging Face cache."""
    directory = Path(directory)
    type_name = read_config(directory)["type"]
    policy_class = family(type_name)
    if tokenizer is None:
        return policy_class.from_pretrained(directory, device).eval()
    if policy_class is BuiltinVLA:
        raise CheckpointError(f"{directory}: a {type_name} checkpoint takes no tokenizer directory")
    return policy_class.from_pretrained(directory, device, tokenizer=Path(tokenizer)).eval()
