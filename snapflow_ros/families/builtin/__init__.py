"""The built-in compact VLA: small enough to train on 2 CPU cores, shaped like pi0."""

from snapflow_ros.families.builtin.configuration import BuiltinVLAConfig
from snapflow_ros.families.builtin.modeling import BuiltinVLA

__all__ = ["BuiltinVLA", "BuiltinVLAConfig"]
