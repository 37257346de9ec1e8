"""Keep demos and tests off real robots and off each other: a random DDS domain nobody on this
machine uses yet, discovery on localhost only."""

from __future__ import annotations

import os
import random
import socket


def domain_in_use(domain_id: int) -> bool:
    """Whether a participant on this machine is on `domain_id`: the first one binds the domain's
    first unicast discovery port (Fast DDS: 7400 + 250 * domain + 10)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("0.0.0.0", 7410 + 250 * domain_id))
        except OSError:
            return True
    return False


def isolated_ros_env(base: dict[str, str] | None = None, domain_id: int | None = None) -> dict[str, str]:
    """A copy of `base` (default os.environ) with a random free ROS_DOMAIN_ID and localhost discovery.

    Domain ids 1..100 stay within what Fast DDS maps to valid ports on Linux. A domain some other
    process here already uses (a soak beside the tests) is skipped, so their nodes never meet.
    """
    env = dict(os.environ if base is None else base)
    if domain_id is None:
        candidates = random.sample(range(1, 101), 100)
        domain_id = next((d for d in candidates if not domain_in_use(d)), candidates[0])
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.pop("ROS_LOCALHOST_ONLY", None)  # deprecated twin of the discovery range
    return env
