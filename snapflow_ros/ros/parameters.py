"""The policy node's parameters: one table of specs, declared with descriptors.

config/policy_node.yaml documents the same parameters for users; a test checks both agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter

from snapflow_ros.errors import ConfigError


@dataclass(frozen=True)
class ParameterSpec:
    """A declared parameter: default None means required (the user must set it)."""

    name: str
    type: Parameter.Type
    default: object
    description: str
    range: tuple[float, float] | None = None
    read_only: bool = False

    def descriptor(self) -> ParameterDescriptor:
        descriptor = ParameterDescriptor(
            name=self.name,
            type=self.type.value,
            description=self.description,
            read_only=self.read_only,
        )
        if self.range is not None:
            low, high = self.range
            if self.type is Parameter.Type.INTEGER:
                descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high))]
            else:
                descriptor.floating_point_range = [FloatingPointRange(from_value=low, to_value=high)]
        return descriptor


POLICY_NODE_PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec(
        "checkpoint", Parameter.Type.STRING, "",
        "Policy checkpoint directory; empty serves the built-in hold-position policy.",
        read_only=True,  # hot swapping through this parameter comes with the flow policies
    ),
    ParameterSpec(
        "joint_names", Parameter.Type.STRING_ARRAY, None,
        "Joints of the state vector and of every action, in policy order (required).",
        read_only=True,
    ),
    ParameterSpec(
        "chunk_rate_hz", Parameter.Type.DOUBLE, 10.0,
        "How often a new action chunk is computed and published.", range=(0.1, 1000.0),
        read_only=True,
    ),
    ParameterSpec(
        "action_horizon", Parameter.Type.INTEGER, 10,
        "Actions per chunk of the built-in hold-position policy.", range=(1, 1000),
        read_only=True,
    ),
    ParameterSpec(
        "action_dt", Parameter.Type.DOUBLE, 0.1,
        "Seconds between consecutive actions of a chunk.", range=(0.001, 10.0),
        read_only=True,
    ),
    ParameterSpec(
        "max_input_age", Parameter.Type.DOUBLE, 0.5,
        "Inputs whose header stamp is older than this many seconds are stale: no chunk is "
        "published from them.", range=(0.001, 60.0),
    ),
)


@dataclass(frozen=True)
class PolicyNodeConfig:
    """Typed values of POLICY_NODE_PARAMETERS."""

    checkpoint: str
    joint_names: tuple[str, ...]
    chunk_rate_hz: float
    action_horizon: int
    action_dt: float
    max_input_age: float


def declare_parameters(node: Node, specs: tuple[ParameterSpec, ...]) -> None:
    for spec in specs:
        value = spec.type if spec.default is None else spec.default
        node.declare_parameter(spec.name, value, spec.descriptor())


def read_policy_node_config(node: Node) -> PolicyNodeConfig:
    """Reads the declared parameters; a required one left unset raises ConfigError."""
    values = {}
    for spec in POLICY_NODE_PARAMETERS:
        try:
            values[spec.name] = node.get_parameter(spec.name).value
        except ParameterUninitializedException:
            raise ConfigError(
                f"parameter '{spec.name}' is required: {spec.description} "
                f"Set it in the params file (config/policy_node.yaml) or with -p {spec.name}:=..."
            ) from None
    names = tuple(values["joint_names"])
    if not names or any(not n for n in names):
        raise ConfigError(f"parameter 'joint_names' must list non-empty joint names, got {list(names)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"parameter 'joint_names' has duplicates: {list(names)}")
    values["joint_names"] = names
    return PolicyNodeConfig(**values)
