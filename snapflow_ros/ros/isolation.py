"""Keep demos and tests off real robots: a random DDS domain, discovery on localhost only."""

from __future__ import annotations

import os
import random


def isolated_ros_env(base: dict[str, str] | None = None, domain_id: int | None = None) -> dict[str, str]:
    """A copy of `base` (default os.environ) with a random ROS_DOMAIN_ID and localhost discovery.

    Domain ids 1..100 stay within what Fast DDS maps to valid ports on Linux.
    """
    env = dict(os.environ if base is None else base)
    env["ROS_DOMAIN_ID"] = str(random.randint(1, 100) if domain_id is None else domain_id)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.pop("ROS_LOCALHOST_ONLY", None)  # deprecated twin of the discovery range
    return env
