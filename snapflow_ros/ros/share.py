"""Where the installed package data (config/, launch/) lives."""

from __future__ import annotations

from pathlib import Path

from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

from snapflow_ros.errors import ConfigError


def share_path(*parts: str) -> Path:
    """A file under share/snapflow_ros (colcon or pip install), e.g. share_path('config', 'x.yaml')."""
    try:
        path = Path(get_package_share_directory("snapflow_ros"), *parts)
    except (PackageNotFoundError, KeyError, ValueError) as error:
        raise ConfigError(
            f"snapflow_ros is not in the ament index ({error}); source your ROS workspace or "
            "run scripts/setup.sh"
        ) from None
    if not path.exists():
        raise ConfigError(f"{path} does not exist: is snapflow_ros installed completely?")
    return path
