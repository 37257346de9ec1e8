"""LeRobot 0.6.1 pi0, pi0.5 and SmolVLA checkpoints as FlowPolicy teachers and students.

The only place (with families/lerobot/*) that imports lerobot or transformers.
"""

from snapflow_ros.families.lerobot.adapter import ADAPTERS, PI0Adapter, PI05Adapter, SmolVLAAdapter

__all__ = ["ADAPTERS", "PI0Adapter", "PI05Adapter", "SmolVLAAdapter"]
