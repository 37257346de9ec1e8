"""The policy node's parameters: one table of specs, declared with descriptors.

config/policy_node.yaml documents the same parameters for users; a test checks both agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter

from snapflow_ros.allowed_roots import AllowedRoots
from snapflow_ros.errors import ConfigError
from snapflow_ros.policy.chunk_executor import CHUNKING_MODES, ExecutorConfig


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
        "autostart", Parameter.Type.BOOL, True,
        "Configure and activate this lifecycle node at start, so `ros2 run` serves at once; false "
        "leaves it unconfigured for a lifecycle manager (ros2 lifecycle set ...).", read_only=True,
    ),
    ParameterSpec(
        "checkpoint", Parameter.Type.STRING, "",
        "Policy checkpoint directory (torch backend) or export directory (onnxruntime backend); "
        "empty serves the built-in hold-position policy. Changing it while running loads, warms "
        "and checks the new policy, then swaps it in between chunks; a failure keeps the old one.",
    ),
    ParameterSpec(
        "backend", Parameter.Type.STRING, "torch",
        "Inference backend: torch or onnxruntime (changing it reloads the policy like checkpoint).",
    ),
    ParameterSpec(
        "device", Parameter.Type.STRING, "cpu", "Torch device: cpu, cuda, cuda:N.", read_only=True,
    ),
    ParameterSpec(
        "denoising_steps", Parameter.Type.INTEGER, 0,
        "Expert passes per chunk; 0: 1 for a SnapFlow student, 10 for a teacher.", range=(0, 100),
    ),
    ParameterSpec(
        "joint_names", Parameter.Type.STRING_ARRAY, None,
        "Joints of the state vector and of every action, in policy order (required).",
        read_only=True,
    ),
    ParameterSpec(
        "cameras", Parameter.Type.STRING_ARRAY, [],
        "Policy camera names, in order (empty for the hold-position policy).", read_only=True,
    ),
    ParameterSpec(
        "camera_topics", Parameter.Type.STRING_ARRAY, [],
        "Topic of each camera (same order); empty: camera/<name>/image_raw or .../compressed.",
        read_only=True,
    ),
    ParameterSpec(
        "camera_formats", Parameter.Type.STRING_ARRAY, [],
        "'raw' (sensor_msgs/Image rgb8/bgr8/mono8) or 'compressed' (CompressedImage jpeg/png) per "
        "camera; empty: all raw.", read_only=True,
    ),
    ParameterSpec(
        "instruction", Parameter.Type.STRING, "",
        "Task instruction until one arrives on the latched 'instruction' topic.",
    ),
    ParameterSpec(
        "chunk_rate_hz", Parameter.Type.DOUBLE, 10.0,
        "How often a new action chunk is computed and published.", range=(0.1, 1000.0),
        read_only=True,
    ),
    ParameterSpec(
        "watermark", Parameter.Type.DOUBLE, 0.0,
        "0: a chunk every 1/chunk_rate_hz. In (0, 1]: on demand, checked at chunk_rate_hz and whenever the "
        "inputs of one moment have arrived (stamps within action_dt/2): a new chunk once this fraction of "
        "the previous chunk's duration has been executed.",
        range=(0.0, 1.0),
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
    ParameterSpec(
        "drop_stale_actions", Parameter.Type.BOOL, True,
        "Drop the actions of a chunk whose time has passed by publication (measured latency).",
    ),
    ParameterSpec(
        "blend_decay", Parameter.Type.DOUBLE, 0.0,
        "Blend a new chunk with the overlapping part of the previous one, old weight exp(-decay*k); "
        "> 0 with chunking blend only, 0 otherwise.", range=(0.0, 100.0),
    ),
    ParameterSpec(
        "chunking", Parameter.Type.STRING, "plain",
        "How a new chunk takes over from the one in force: plain (it replaces it where execution is "
        "on arrival), blend (its overlap with the one in force is blended, see blend_decay; needs "
        "blend_decay > 0) or rtc (real-time chunking: it is generated conditioned on the actions "
        "executed meanwhile, for a policy trained with --max-delay; needs drop_stale_actions).",
    ),
    ParameterSpec(
        "latency_window", Parameter.Type.INTEGER, 20,
        "Recent chunks whose latency (p95) predicts the delay an rtc chunk is generated for.",
        range=(1, 1000),
    ),
    ParameterSpec(
        "allowed_roots", Parameter.Type.STRING_ARRAY, [],
        "Directories the node may read checkpoints and bags from and write distillation outputs into "
        "(symlinks followed); the directory holding the checkpoint configured at start is always "
        "allowed. A swap or job naming a path outside them is refused with the reason.", read_only=True,
    ),
    ParameterSpec(
        "distillation", Parameter.Type.BOOL, True,
        "Offer SnapFlow distillation from bags on this node (~/start_distillation, ~/distill, ...); "
        "jobs run in their own process.", read_only=True,
    ),
    ParameterSpec(
        "distillation_niceness", Parameter.Type.INTEGER, 10,
        "CPU niceness of distillation job processes, so the control loop keeps priority.",
        range=(0, 19), read_only=True,
    ),
    ParameterSpec(
        "distillation_threads", Parameter.Type.INTEGER, 0,
        "Torch threads of a distillation job process; 0: torch's default (all cores).",
        range=(0, 256), read_only=True,
    ),
)


@dataclass(frozen=True)
class PolicyNodeConfig:
    """Typed values of POLICY_NODE_PARAMETERS."""

    autostart: bool
    checkpoint: str
    backend: str
    device: str
    denoising_steps: int
    joint_names: tuple[str, ...]
    cameras: tuple[str, ...]
    camera_topics: tuple[str, ...]
    camera_formats: tuple[str, ...]
    instruction: str
    chunk_rate_hz: float
    watermark: float
    action_horizon: int
    action_dt: float
    max_input_age: float
    drop_stale_actions: bool
    blend_decay: float
    chunking: str
    latency_window: int
    allowed_roots: tuple[str, ...]
    distillation: bool
    distillation_niceness: int
    distillation_threads: int

    def executor_config(self) -> ExecutorConfig:
        return ExecutorConfig(action_dt_s=self.action_dt, watermark=self.watermark,
                              drop_stale_actions=self.drop_stale_actions, blend_decay=self.blend_decay,
                              chunking=self.chunking, latency_window=self.latency_window)


def declare_parameters(node: Node, specs: tuple[ParameterSpec, ...]) -> None:
    for spec in specs:
        # rclpy would type an empty list as BYTE_ARRAY: declare those by type, unset.
        unset = spec.default is None or spec.default == []
        node.declare_parameter(spec.name, spec.type if unset else spec.default, spec.descriptor())


def startup_allowed_roots(node: Node) -> AllowedRoots:
    """The node's allowed roots: its 'allowed_roots' and the directory of the checkpoint it was
    started with (both read once, at start: later requests cannot widen them)."""
    checkpoint = node.get_parameter("checkpoint").value
    return AllowedRoots.of([*string_array(node, "allowed_roots"),
                            str(Path(checkpoint).expanduser().resolve().parent) if checkpoint else ""])


def string_array(node: Node, name: str) -> list[str]:
    """A STRING_ARRAY parameter's value; [] when declared empty (rclpy leaves it unset)."""
    try:
        return list(node.get_parameter(name).value)
    except ParameterUninitializedException:
        return []


def read_policy_node_config(node: Node) -> PolicyNodeConfig:
    """Reads the declared parameters; a required one left unset raises ConfigError."""
    values = {}
    for spec in POLICY_NODE_PARAMETERS:
        try:
            values[spec.name] = node.get_parameter(spec.name).value
        except ParameterUninitializedException:
            if spec.default is not None:  # an empty list left unset
                values[spec.name] = spec.default
                continue
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
    cameras = tuple(values["cameras"])
    topics = tuple(values["camera_topics"])
    formats = tuple(values["camera_formats"]) or ("raw",) * len(cameras)
    if topics and len(topics) != len(cameras):
        raise ConfigError(f"parameter 'camera_topics' has {len(topics)} entries for {len(cameras)} cameras")
    if len(formats) != len(cameras) or any(f not in ("raw", "compressed") for f in formats):
        raise ConfigError(f"parameter 'camera_formats' must give 'raw' or 'compressed' for each of "
                          f"{len(cameras)} cameras, got {list(formats)}")
    if not topics:
        topics = tuple(f"camera/{c}/{'compressed' if f == 'compressed' else 'image_raw'}"
                       for c, f in zip(cameras, formats))
    values |= {"cameras": cameras, "camera_topics": topics, "camera_formats": formats,
               "allowed_roots": tuple(values["allowed_roots"])}
    if values["chunking"] not in CHUNKING_MODES:
        raise ConfigError(f"parameter 'chunking' must be one of {list(CHUNKING_MODES)}, got {values['chunking']!r}")
    config = PolicyNodeConfig(**values)
    config.executor_config()  # the chunk parameters together (e.g. blend_decay needs chunking blend), before a load
    return config
