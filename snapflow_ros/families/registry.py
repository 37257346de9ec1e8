"""Policy families by the "type" written in a checkpoint's config.json."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable

from snapflow_ros.errors import CheckpointError
from snapflow_ros.policy.contract import FlowPolicy


@dataclass(frozen=True)
class Family:
    config_from_dict: Callable[[dict[str, Any]], Any]
    build: Callable[[Any], FlowPolicy]


def _builtin() -> Family:
    from snapflow_ros.families.builtin import BuiltinVLA, BuiltinVLAConfig

    return Family(BuiltinVLAConfig.from_dict, BuiltinVLA)


FAMILIES: dict[str, Callable[[], Family]] = {"builtin": _builtin}


def family(type_name: str) -> Family:
    if type_name not in FAMILIES:
        close = difflib.get_close_matches(type_name, FAMILIES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise CheckpointError(
            f"unknown policy type '{type_name}'{hint}; known types: {sorted(FAMILIES)}")
    return FAMILIES[type_name]()
