"""The rosbags type store for writing bags: ROS 2 Kilted's standard types plus snapflow_interfaces'
messages (from the installed share/ folder, else the source tree)."""

from __future__ import annotations

import sys
from pathlib import Path

from snapflow_ros.errors import ConfigError

INTERFACE_MESSAGES = ("ActionChunk", "EpisodeResult")


def interface_text(name: str) -> str:
    for root in (Path(sys.prefix) / "share" / "snapflow_interfaces", Path(__file__).resolve().parents[2] / "msg"):
        path = root / "msg" / f"{name}.msg"
        if path.is_file():
            return path.read_text()
    raise ConfigError(f"snapflow_interfaces/msg/{name}.msg not found (is snapflow_interfaces installed?)")


def writing_typestore():
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    for name in INTERFACE_MESSAGES:
        store.register(get_types_from_msg(interface_text(name), f"snapflow_interfaces/msg/{name}"))
    return store
