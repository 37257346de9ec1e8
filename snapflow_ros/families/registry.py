"""Policy families by the "type" written in a checkpoint's config.json.

A family is a FlowPolicy class with `from_pretrained(directory, device)` and
`save_pretrained(directory)`; lerobot is imported only when a LeRobot family is used.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from snapflow_ros.errors import CheckpointError
from snapflow_ros.policy.contract import FlowPolicy


def _builtin() -> type[FlowPolicy]:
    from snapflow_ros.families.builtin import BuiltinVLA

    return BuiltinVLA


def _lerobot(type_name: str) -> Callable[[], type[FlowPolicy]]:
    def load() -> type[FlowPolicy]:
        from snapflow_ros.families.lerobot import ADAPTERS

        return ADAPTERS[type_name]

    return load


FAMILIES: dict[str, Callable[[], type[FlowPolicy]]] = {
    "builtin": _builtin,
    "pi0": _lerobot("pi0"),
    "pi05": _lerobot("pi05"),
    "smolvla": _lerobot("smolvla"),
}


def family(type_name: str) -> type[FlowPolicy]:
    if type_name not in FAMILIES:
        close = difflib.get_close_matches(type_name, FAMILIES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise CheckpointError(
            f"unknown policy type '{type_name}'{hint}; known types: {sorted(FAMILIES)}")
    return FAMILIES[type_name]()
