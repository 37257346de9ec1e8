"""Reading the configured topics of one ROS 2 bag (sqlite3 or MCAP) with rosbags.

Bags are opened read-only (rosbags opens sqlite3 files immutable and MCAP files for reading);
message types come from the definitions stored in the bag, so custom messages need no install.
Every failure is a BagError naming the bag, and the topic where there is one.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from snapflow_ros.errors import BagError

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
JOINT_STATE_TYPES = ("sensor_msgs/msg/JointState",)
INSTRUCTION_TYPES = ("std_msgs/msg/String",)
ACTION_TYPES = ("trajectory_msgs/msg/JointTrajectory", "sensor_msgs/msg/JointState",
                "std_msgs/msg/Float64MultiArray", "std_msgs/msg/Float32MultiArray",
                "snapflow_interfaces/msg/ActionChunk")


@dataclass
class TopicStream:
    """One topic's messages in stamp order."""

    topic: str
    msgtype: str
    stamps: np.ndarray                     # (n,) int64 nanoseconds, non-decreasing
    messages: list = field(repr=False)     # deserialised rosbags message objects


def _read_errors() -> tuple[type[BaseException], ...]:
    from rosbags.highlevel import AnyReaderError
    from rosbags.rosbag2 import ReaderError
    from rosbags.serde import SerdeError

    # struct/EOF/Value errors are what truncated MCAP chunks and CDR payloads raise
    return (AnyReaderError, ReaderError, SerdeError, sqlite3.Error, OSError, struct.error, EOFError,
            ValueError, KeyError, IndexError, AssertionError)


def describe_bag(path: Path) -> dict[str, tuple[str, int]]:
    """topic -> (message type, message count) of a bag."""
    with _open(Path(path)) as reader:
        return {c.topic: (c.msgtype, c.msgcount) for c in reader.connections}


def _open(path: Path):
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    if not path.exists():
        raise BagError(f"bag {path}: no such file or directory")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        raise BagError(f"bag {path}: metadata.yaml missing (was the recording interrupted? "
                       f"`ros2 bag reindex {path}` rebuilds it)")
    try:
        reader = AnyReader([path], default_typestore=get_typestore(Stores.ROS2_KILTED))
        reader.open()
    except _read_errors() as error:
        raise BagError(f"bag {path}: cannot open ({type(error).__name__}: {error})") from None
    return closing(reader)


def read_topics(path: Path, wanted: dict[str, tuple[str, ...] | None], stamps: str = "header",
                optional: Iterable[str] = ()) -> dict[str, TopicStream]:
    """Messages of each wanted topic (topic -> accepted message types, None: any), stamped by their header
    (falling back to the log time for messages without one) or by the log time.

    A wanted topic that is absent raises BagError unless it is in `optional`."""
    path = Path(path)
    optional = set(optional)
    with _open(path) as reader:
        available = {c.topic: c.msgtype for c in reader.connections}
        for topic, types in wanted.items():
            if topic not in available:
                if topic in optional:
                    continue
                raise BagError(f"bag {path}: topic {topic} not found; the bag has {sorted(available)}")
            if types is not None and available[topic] not in types:
                raise BagError(f"bag {path}: topic {topic} has type {available[topic]}, expected one of "
                               f"{list(types)}")
        connections = [c for c in reader.connections if c.topic in wanted]
        collected: dict[str, list[tuple[int, object]]] = {c.topic: [] for c in connections}
        current = "?"
        try:
            for connection, log_time, raw in reader.messages(connections=connections):
                current = connection.topic
                msg = reader.deserialize(raw, connection.msgtype)
                header = getattr(msg, "header", None)
                stamp = log_time
                if stamps == "header" and header is not None:
                    header_ns = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
                    stamp = header_ns or log_time  # unstamped publishers leave zeros
                collected[connection.topic].append((stamp, msg))
        except _read_errors() as error:
            raise BagError(f"bag {path}: unreadable while reading topic {current} (truncated or corrupt? "
                           f"{type(error).__name__}: {error})") from None
    streams = {}
    for topic, items in collected.items():
        items.sort(key=lambda item: item[0])
        streams[topic] = TopicStream(topic, available[topic],
                                     np.array([s for s, _ in items], dtype=np.int64), [m for _, m in items])
    return streams
