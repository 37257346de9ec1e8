"""BagDatasetConfig: which bag topics feed which policy input, and how samples are cut.

Written as YAML (config/bag_dataset.yaml documents every field) or built from a policy node's
own parameters, so data recorded from the node's topics needs no extra file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from snapflow_ros.errors import ConfigError

ACTION_SOURCES = ("topic", "next_state")
EPISODE_SPLITS = ("gap", "topic", "bag")
STAMP_SOURCES = ("header", "receive")


@dataclass(frozen=True)
class BagDatasetConfig:
    cameras: dict[str, str]                 # policy camera name -> Image or CompressedImage topic
    joint_names: tuple[str, ...]            # state = these joints' positions, in this order
    joint_state_topic: str = "/joint_states"
    instruction_topic: str = ""             # std_msgs/String; the latest one before a sample applies
    instruction: str = ""                   # when the bag has no instruction message (yet)
    action_source: str = "topic"            # topic: recorded commands; next_state: next tick's state
    action_topic: str = "/joint_commands"   # JointTrajectory, JointState, Float64MultiArray or ActionChunk
    action_names: tuple[str, ...] = ()      # action dims by joint name; empty: joint_names
    rate_hz: float = 10.0                   # samples per second (the policy's control rate)
    max_staleness: float = 0.2              # seconds an input may be older than its sample
    stamps: str = "header"                  # header: message header stamps; receive: bag log times
    episode_split: str = "gap"              # gap: time gaps; topic: a message per episode start; bag
    episode_gap: float = 1.0                # gap split: seconds without joint states that end an episode
    episode_topic: str = "/episode_start"   # topic split: any message type; each one starts an episode
    image_size: dict[str, tuple[int, int]] = field(default_factory=dict)  # camera -> (H, W) required

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, why: str) -> None:
            if not ok:
                raise ConfigError(f"bag dataset '{name}' = {getattr(self, name)!r}: {why}")

        need(len(self.joint_names) > 0 and len(set(self.joint_names)) == len(self.joint_names),
             "joint_names", "list the distinct joints of the state")
        need(all(name and topic for name, topic in self.cameras.items()), "cameras",
             "map each camera name to a topic")
        need(self.action_source in ACTION_SOURCES, "action_source", f"use one of {list(ACTION_SOURCES)}")
        need(self.episode_split in EPISODE_SPLITS, "episode_split", f"use one of {list(EPISODE_SPLITS)}")
        need(self.stamps in STAMP_SOURCES, "stamps", f"use one of {list(STAMP_SOURCES)}")
        need(self.rate_hz > 0, "rate_hz", "must be > 0")
        need(self.max_staleness > 0, "max_staleness", "must be > 0")
        need(self.episode_gap > 0, "episode_gap", "must be > 0")
        need(self.action_source != "next_state" or set(self.actions) <= set(self.joint_names),
             "action_names", "with action_source next_state, actions must be joints of the state")
        unknown = set(self.image_size) - set(self.cameras)
        need(not unknown, "image_size", f"names cameras {sorted(unknown)} not in 'cameras'")

    @property
    def actions(self) -> tuple[str, ...]:
        return self.action_names or self.joint_names

    @property
    def period_ns(self) -> int:
        return round(1e9 / self.rate_hz)

    def topics(self) -> list[str]:
        """Every topic the dataset reads: what `ros2 bag record` must record."""
        topics = [*self.cameras.values(), self.joint_state_topic]
        if self.instruction_topic:
            topics.append(self.instruction_topic)
        if self.action_source == "topic":
            topics.append(self.action_topic)
        if self.episode_split == "topic":
            topics.append(self.episode_topic)
        return list(dict.fromkeys(topics))

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["joint_names"] = list(self.joint_names)
        values["action_names"] = list(self.action_names)
        values["image_size"] = {c: list(s) for c, s in self.image_size.items()}
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "bag dataset config") -> BagDatasetConfig:
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: expected a mapping of fields, got {type(values).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"{source}: unknown fields {sorted(unknown)}; known: {sorted(known)}")
        missing = [name for name in ("cameras", "joint_names") if name not in values]
        if missing:
            raise ConfigError(f"{source}: required fields {missing} missing")
        values = dict(values)
        try:
            values["cameras"] = {str(k): str(v) for k, v in (values["cameras"] or {}).items()}
            for name in ("joint_names", "action_names"):
                values[name] = tuple(str(v) for v in values.get(name) or ())
            values["image_size"] = {str(c): (int(s[0]), int(s[1]))
                                    for c, s in (values.get("image_size") or {}).items()}
        except (AttributeError, TypeError, ValueError, IndexError) as error:
            raise ConfigError(f"{source}: malformed field ({error})") from None
        try:
            return cls(**values)
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None

    @classmethod
    def from_yaml(cls, path: Path) -> BagDatasetConfig:
        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text())
        except OSError as error:
            raise ConfigError(f"{path}: cannot read the bag dataset config ({error.strerror})") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error})") from None
        return cls.from_dict(values, str(path))

    def write_yaml(self, path: Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
