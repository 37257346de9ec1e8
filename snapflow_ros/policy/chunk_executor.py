"""ChunkExecutor: when the next chunk is due, what of a new chunk is still ahead, and which action
is in force at any moment.

The policy node and the simulated rollout both run it, so `sim-eval` measures the controller the
robot runs. It has no clock of its own: every call is told the time, so its rules are tested
without ROS and run the same on wall time, sim time and a stepped simulation.

Chunking modes (ExecutorConfig.chunking):
  plain  the new chunk replaces the one in force where execution is on arrival;
  blend  its overlap with the one in force is blended in (old weight exp(-blend_decay * k));
  rtc    real-time chunking: it was generated conditioned on the actions the chunk in force
         executes during inference (upcoming_actions, predicted_delay_steps), so it starts by
         continuing them and takes over where execution is on arrival.

Clock jumps: a time more than one action step before the arrival of the chunk in force can only
mean the clock went back (a simulation reset, a stepped system clock; less than a step delays the
next chunk by less than a step). That chunk is then forgotten (check_clock), as after
reset(): otherwise the share of it "executed" stays negative until the clock is back where it was,
and a watermark would block chunks for as long as the jump. The next chunk starts afresh, one
chunk, no burst. A jump forward needs nothing: the chunk in force has run out, one chunk is due.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from snapflow_ros.errors import ConfigError
from snapflow_ros.policy.chunk_timing import blend_overlap, blend_window, drop_stale, index_in_force

CHUNKING_MODES = ("plain", "blend", "rtc")
# Blend weights of the previous chunk below this no longer shape the handover (handover_steps).
BLEND_WEIGHT_FLOOR = 0.01


class Trigger(enum.Enum):
    """What woke the caller."""

    PERIOD = "period"               # the chunk timer (chunk_rate_hz)
    INPUTS_COMPLETE = "inputs"      # the camera frames and joint state of one moment are all in


@dataclass(frozen=True)
class ExecutorConfig:
    """The node's chunk parameters (action_dt, watermark, drop_stale_actions, blend_decay,
    chunking, latency_window)."""

    action_dt_s: float
    watermark: float = 0.0          # 0: a chunk per period; else when this share of the one in force ran
    drop_stale_actions: bool = True
    blend_decay: float = 0.0        # > 0 with chunking "blend" only
    chunking: str = "plain"         # plain | blend | rtc (see the module)
    latency_window: int = 20        # accepted chunks whose latency predicted_delay_steps uses

    def __post_init__(self) -> None:
        if not self.action_dt_s > 0:
            raise ConfigError(f"action_dt must be positive, got {self.action_dt_s}")
        if not 0.0 <= self.watermark <= 1.0:
            raise ConfigError(f"watermark must be in [0, 1], got {self.watermark}")
        if self.chunking not in CHUNKING_MODES:
            raise ConfigError(f"chunking must be one of {', '.join(CHUNKING_MODES)}, got {self.chunking!r}")
        if self.blend_decay < 0:
            raise ConfigError(f"blend_decay must be >= 0, got {self.blend_decay}")
        # A decay without blend mode would silently do nothing: say so instead.
        if self.blend_decay > 0 and self.chunking != "blend":
            raise ConfigError(f"blend_decay is {self.blend_decay} but chunking is {self.chunking!r}: "
                              f"blending happens only with chunking: blend (set chunking: blend, or blend_decay: 0)")
        if self.chunking == "blend" and not self.blend_decay > 0:
            raise ConfigError(f"chunking 'blend' needs blend_decay > 0, got {self.blend_decay}")
        if self.chunking == "rtc" and not self.drop_stale_actions:
            raise ConfigError("chunking 'rtc' needs drop_stale_actions true (an rtc chunk starts where "
                              "execution is on arrival), got drop_stale_actions false")
        if self.latency_window < 1:
            raise ConfigError(f"latency_window must be >= 1, got {self.latency_window}")

    @property
    def action_dt_ns(self) -> int:
        return round(self.action_dt_s * 1e9)


@dataclass(frozen=True)
class ScheduledChunk:
    """The actions of an accepted chunk still ahead: action k is in force from start_ns + k * dt."""

    actions: np.ndarray
    start_ns: int
    observation_ns: int
    arrival_ns: int
    policy_id: str
    stale_actions: int              # dropped because inference latency had already passed them
    # Control steps from arrival on over which this chunk departs from what the previous one would
    # have commanded, by construction: 1 for a plain switch, the kept committed prefix + 1 in rtc,
    # the blend window in blend (see snapflow_ros.policy.handover).
    handover_steps: int = 1

    @property
    def horizon(self) -> int:
        return len(self.actions)

    def index_at(self, now_ns: int, dt_ns: int) -> int:
        return index_in_force(self.start_ns, dt_ns, self.horizon, now_ns)

    def action_at(self, now_ns: int, dt_ns: int) -> np.ndarray:
        """The action in force at now_ns (the last one once the chunk has run out)."""
        return self.actions[self.index_at(now_ns, dt_ns)]


class ChunkExecutor:
    def __init__(self, config: ExecutorConfig) -> None:
        self.config = config  # may be replaced while running (the node's parameters)
        self._current: ScheduledChunk | None = None
        self._latencies_ns: list[int] = []  # of the last accepted chunks, oldest first

    @property
    def current(self) -> ScheduledChunk | None:
        return self._current

    def reset(self) -> None:
        """Forget the chunk in force (a new episode, a deactivated node). The latency history is
        kept: latency is a property of the machine and the policy, not of an episode, and the
        first rtc chunk of an episode should already be told the delay it will have."""
        self._current = None

    def check_clock(self, now_ns: int) -> int:
        """Forgets the chunk in force when now_ns lies more than one action step before its arrival
        (the clock went back); returns how far back it went (ns), 0 when it did not. due() and
        accept() call it."""
        chunk = self._current
        if chunk is None or now_ns >= chunk.arrival_ns - self.config.action_dt_ns:
            return 0
        self._current = None
        return chunk.arrival_ns - now_ns

    def executed_share(self, now_ns: int) -> float:
        """Share of the chunk in force whose time has passed (1.0 when none is)."""
        chunk = self._current
        if chunk is None:
            return 1.0
        return (now_ns - chunk.start_ns) / (chunk.horizon * self.config.action_dt_ns)

    def due(self, now_ns: int, trigger: Trigger) -> bool:
        """Whether to compute a chunk now. Without a watermark, on the period; with one, as soon as
        that share of the chunk in force has executed, on whichever trigger comes first."""
        self.check_clock(now_ns)
        if self.config.watermark == 0:
            return trigger is Trigger.PERIOD
        return self._current is None or self.executed_share(now_ns) >= self.config.watermark

    def accept(self, actions: np.ndarray, observation_ns: int, now_ns: int, policy_id: str,
               committed: int = 0) -> ScheduledChunk:
        """A chunk computed from the observation stamped observation_ns, ready at now_ns: the
        actions inference latency already passed are dropped (if configured), in blend mode the
        overlap with the chunk in force is blended (same policy only), and it becomes the chunk
        in force. committed: in rtc mode, the delay d (control steps) it was generated with, i.e.
        its first d actions continue the chunk in force."""
        c = self.config
        self.check_clock(now_ns)  # a chunk in force from before a jump back is not continued or blended
        self._record_latency(now_ns - observation_ns)
        start_ns, stale = observation_ns, 0
        if c.drop_stale_actions:
            kept, start_ns = drop_stale(actions, observation_ns, c.action_dt_s, now_ns)
            stale, actions = len(actions) - len(kept), kept
        previous = self._current
        handover = 1
        if previous is not None and c.chunking == "rtc":
            # the committed actions still ahead replay the previous chunk; the first generated one follows
            handover = max(0, committed - stale) + 1
        elif previous is not None and c.chunking == "blend" and previous.policy_id == policy_id:
            _, overlap = blend_window(previous.horizon, previous.start_ns, len(actions), start_ns, c.action_dt_s)
            weights = np.exp(-c.blend_decay * np.arange(overlap))
            handover = max(1, int(np.count_nonzero(weights > BLEND_WEIGHT_FLOOR)))
            actions = blend_overlap(previous.actions, previous.start_ns, actions, start_ns, c.action_dt_s,
                                    c.blend_decay)
        self._current = ScheduledChunk(actions=actions, start_ns=start_ns, observation_ns=observation_ns,
                                       arrival_ns=now_ns, policy_id=policy_id, stale_actions=stale,
                                       handover_steps=handover)
        return self._current

    def _record_latency(self, latency_ns: int) -> None:
        self._latencies_ns.append(max(0, latency_ns))
        del self._latencies_ns[:-self.config.latency_window]  # (the window may have changed meanwhile)

    def predicted_delay_steps(self, max_delay: int) -> int:
        """Control steps the next chunk will take to arrive: the 95th percentile of the recent
        latencies in action steps, rounded up (a step only partly executed is still committed),
        capped at max_delay; 0 before any chunk was accepted."""
        window = self._latencies_ns[-self.config.latency_window:]
        if not window or max_delay <= 0:
            return 0
        p95 = float(np.percentile(window, 95))
        steps = math.ceil(p95 / self.config.action_dt_ns - 1e-9)  # an exact multiple is not rounded up
        return min(max(steps, 0), max_delay)

    def upcoming_actions(self, from_ns: int) -> np.ndarray | None:
        """What the chunk in force executes from from_ns on: its actions from the one in force
        then to its end (just the last action once it has run out); None without a chunk. An rtc
        caller commits the first d (padded with the last) or inpaints towards all of them."""
        chunk = self._current
        if chunk is None:
            return None
        return chunk.actions[chunk.index_at(from_ns, self.config.action_dt_ns):].copy()

    def action_at(self, now_ns: int) -> np.ndarray | None:
        """The action in force at now_ns: what a joint_trajectory_controller executing the
        published chunk commands then (the last point once the chunk has run out); None before
        the first chunk."""
        chunk = self._current
        if chunk is None:
            return None
        return chunk.action_at(now_ns, self.config.action_dt_ns)
