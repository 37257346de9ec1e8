"""The simulated tasks: Meta-World environments with an instruction, a step budget and an expert.

reach-detour is the multi-modal one: every episode starts from the same pose with the same goal,
and an invisible pillar stands halfway between them; the expert passes it on the left or on the
right at random. Both routes run straight at the pillar until 3 cm before it, so along that
stretch the same observation is followed by two different futures; where they part, their
mean heads on at the pillar and reaches it within one 8-step chunk, ending the episode as a
failure.
"""

from __future__ import annotations

from dataclasses import dataclass

from snapflow_ros.errors import ConfigError


# Bump when tasks, the robot or the experts change what gets recorded: sim-demo's cached bags and
# teacher are keyed by it.
SIM_REVISION = 5


@dataclass(frozen=True)
class SimTask:
    name: str
    env_name: str                  # Meta-World v3 environment
    instruction: str
    max_steps: int                 # environment steps before the episode counts as failed
    pillar_radius: float = 0.0     # > 0: the invisible pillar of the detour task (metres)
    detour: float = 0.0            # sideways offset of the expert's via point (metres)
    planar: bool = False           # goal at the fingertips' start height (a top-view camera shows x, y only)
    goal_xy: tuple[float, float] | None = None  # fixed (x, y) of a planar goal instead of Meta-World's random one

    @property
    def multimodal(self) -> bool:
        return self.pillar_radius > 0


TASKS: dict[str, SimTask] = {t.name: t for t in (
    SimTask("reach", "reach-v3", "reach the goal", max_steps=100, planar=True),
    SimTask("reach-detour", "reach-v3", "reach the goal around the pillar", max_steps=100,
            pillar_radius=0.05, detour=0.16, planar=True, goal_xy=(0.0, 0.85)),
    SimTask("button-press", "button-press-topdown-v3", "press the button", max_steps=120),
)}


def get_task(name: str) -> SimTask:
    if name not in TASKS:
        raise ConfigError(f"unknown sim task '{name}'; known: {sorted(TASKS)}")
    return TASKS[name]


def sim_bag_config(rate_hz: float):
    """How bags recorded from sim_robot's topics are read (its expert's commands as actions)."""
    from snapflow_ros.bags.config import BagDatasetConfig
    from snapflow_ros.sim.robot import STATE_NAMES

    return BagDatasetConfig(cameras={"top": "/camera/top/image_raw"}, joint_names=STATE_NAMES,
                            instruction_topic="/instruction", action_topic="/joint_commands", rate_hz=rate_hz,
                            max_staleness=1.5 / rate_hz, episode_split="topic", episode_topic="/episode_start")
