"""ROS 2 bags -> (observation, action chunk) samples: BagChunkDataset.

Per bag: read the configured topics, cut episodes (time gaps, an episode topic, or the whole
bag), sample each episode at the control rate (the latest message of every input at each tick,
at most max_staleness old; ticks with a stale or missing input are skipped), and give each
sample the next chunk_size actions with a mask that is False past the episode end or where no
fresh action exists. Images are decoded by the node's decoders and stored once per message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from snapflow_ros.bags.alignment import (
    control_ticks,
    following_command,
    latest_at,
    split_by_gap,
    split_by_markers,
)
from snapflow_ros.bags.config import BagDatasetConfig
from snapflow_ros.bags.reader import (
    ACTION_TYPES,
    IMAGE_TYPES,
    INSTRUCTION_TYPES,
    JOINT_STATE_TYPES,
    TopicStream,
    read_topics,
)
from snapflow_ros.data.chunks import ChunkSample, InMemoryChunkDataset
from snapflow_ros.errors import BagError, ConfigError, InputError
from snapflow_ros.policy.contract import RawBatch
from snapflow_ros.sensors.images import decode_compressed, decode_raw
from snapflow_ros.sensors.joints import joint_positions


@dataclass
class BagChunkDataset:
    """Samples from bags; frames are shared between samples that saw the same image message."""

    frames: dict[str, torch.Tensor]        # camera -> (F, H, W, 3) uint8
    frame_index: dict[str, torch.Tensor]   # camera -> (N,) index into frames
    states: torch.Tensor                   # (N, state_dim)
    actions: torch.Tensor                  # (N, chunk_size, action_dim)
    action_masks: torch.Tensor             # (N, chunk_size) bool
    instructions: list[str]
    episodes: torch.Tensor                 # (N,) episode number, in bag order
    ticks: torch.Tensor                    # (N,) int64 sample time, ns
    joint_names: tuple[str, ...]
    action_names: tuple[str, ...]
    report: dict = field(default_factory=dict)  # per bag: episodes, samples, skipped ticks

    def __len__(self) -> int:
        return int(self.states.shape[0])

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.frames)

    def __getitem__(self, index: int) -> ChunkSample:
        return ChunkSample(images={c: f[self.frame_index[c][index]] for c, f in self.frames.items()},
                           instruction=self.instructions[index], state=self.states[index],
                           actions=self.actions[index], action_mask=self.action_masks[index])

    def batch(self, index: torch.Tensor) -> RawBatch:
        return RawBatch(images={c: f[self.frame_index[c][index]] for c, f in self.frames.items()},
                        instruction=[self.instructions[i] for i in index.tolist()],
                        state=self.states[index], actions=self.actions[index],
                        action_mask=self.action_masks[index])

    def select(self, index: torch.Tensor) -> BagChunkDataset:
        return BagChunkDataset(self.frames, {c: i[index] for c, i in self.frame_index.items()},
                               self.states[index], self.actions[index], self.action_masks[index],
                               [self.instructions[i] for i in index.tolist()], self.episodes[index],
                               self.ticks[index], self.joint_names, self.action_names, self.report)

    def episode_split(self, holdout_episodes: int) -> tuple[BagChunkDataset, BagChunkDataset]:
        """(training, held-out) with the last `holdout_episodes` episodes held out."""
        count = int(self.episodes.max()) + 1
        if not 0 < holdout_episodes < count:
            raise ConfigError(f"cannot hold out {holdout_episodes} of {count} recorded episodes")
        held = self.episodes >= count - holdout_episodes
        return (self.select(torch.nonzero(~held).squeeze(1)), self.select(torch.nonzero(held).squeeze(1)))

    def materialize(self) -> InMemoryChunkDataset:
        return InMemoryChunkDataset(images={c: f[self.frame_index[c]] for c, f in self.frames.items()},
                                    instructions=list(self.instructions), states=self.states,
                                    actions=self.actions, action_masks=self.action_masks)


def load_bag_dataset(bags: list[Path], config: BagDatasetConfig, chunk_size: int) -> BagChunkDataset:
    """Every bag in `bags` (directories of sqlite3 or MCAP recordings), concatenated."""
    if not bags:
        raise ConfigError("no bags given")
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
    parts = [_BagSamples(Path(bag), config, chunk_size) for bag in bags]
    sizes: dict[str, tuple[int, int]] = dict(config.image_size)
    for part in parts:
        for camera, frames in part.frames.items():
            size = tuple(frames.shape[1:3])
            if sizes.setdefault(camera, size) != size:
                raise BagError(f"bag {part.bag}: topic {config.cameras[camera]}: images are {size[0]}x{size[1]}, "
                               f"expected {sizes[camera][0]}x{sizes[camera][1]} as in the other bags")
    frame_offsets = {c: 0 for c in config.cameras}
    frame_index: dict[str, list[torch.Tensor]] = {c: [] for c in config.cameras}
    episode_offset, episodes = 0, []
    for part in parts:
        for camera in config.cameras:
            frame_index[camera].append(part.frame_index[camera] + frame_offsets[camera])
            frame_offsets[camera] += len(part.frames[camera])
        episodes.append(part.episodes + episode_offset)
        episode_offset += part.episode_count
    return BagChunkDataset(
        frames={c: torch.cat([p.frames[c] for p in parts]) for c in config.cameras},
        frame_index={c: torch.cat(v) for c, v in frame_index.items()},
        states=torch.cat([p.states for p in parts]), actions=torch.cat([p.actions for p in parts]),
        action_masks=torch.cat([p.masks for p in parts]),
        instructions=[i for p in parts for i in p.instructions], episodes=torch.cat(episodes),
        ticks=torch.cat([p.ticks for p in parts]),
        joint_names=config.joint_names, action_names=config.actions,
        report={str(p.bag): p.report for p in parts})


class _BagSamples:
    """The samples of one bag (see the module docstring for the rules)."""

    def __init__(self, bag: Path, config: BagDatasetConfig, chunk_size: int) -> None:
        self.bag, self.config, self.chunk_size = bag, config, chunk_size
        wanted = {topic: IMAGE_TYPES for topic in config.cameras.values()}
        wanted[config.joint_state_topic] = JOINT_STATE_TYPES
        optional = []
        if config.instruction_topic:
            wanted[config.instruction_topic] = INSTRUCTION_TYPES
            if config.instruction:  # the fallback makes the topic optional
                optional.append(config.instruction_topic)
        if config.action_source == "topic":
            wanted[config.action_topic] = ACTION_TYPES
        if config.episode_split == "topic":
            wanted[config.episode_topic] = None  # any type marks an episode start
        streams = read_topics(bag, wanted, config.stamps, optional)
        try:
            self._build(streams)
        except BagError:
            raise
        except InputError as error:  # shared decoders: their messages already name bag and topic
            raise BagError(str(error)) from None

    def _source(self, topic: str) -> str:
        return f"bag {self.bag}: topic {topic}"

    def _build(self, streams: dict[str, TopicStream]) -> None:
        c = self.config
        self.streams = streams
        self.joints = streams[c.joint_state_topic]
        if not self.joints.messages:
            raise BagError(f"{self._source(c.joint_state_topic)}: no messages")
        source = self._source(c.joint_state_topic)
        self.positions = np.stack([joint_positions(m, c.joint_names, source) for m in self.joints.messages])
        self.commands = None
        if c.action_source == "topic":
            stream = streams[c.action_topic]
            if not stream.messages:
                raise BagError(f"{self._source(c.action_topic)}: no messages")
            self.commands = np.stack([_action_values(m, stream.msgtype, c.actions, self._source(c.action_topic))
                                      for m in stream.messages])
        self.skipped = {"stale_or_missing_input": 0, "no_fresh_action": 0}
        episodes = [e for e in (self._sample_episode(*w) for w in self._episodes(streams, self.joints)) if e]
        if not episodes:
            raise BagError(f"bag {self.bag}: no usable samples: no tick at {c.rate_hz:g} Hz had every input "
                           f"({c.topics()}) fresher than max_staleness={c.max_staleness:g}s and an action")
        self.episode_count = len(episodes)
        self.states = torch.as_tensor(np.concatenate([e["state"] for e in episodes]), dtype=torch.float32)
        self.actions = torch.as_tensor(np.concatenate([e["actions"] for e in episodes]), dtype=torch.float32)
        self.masks = torch.as_tensor(np.concatenate([e["mask"] for e in episodes]))
        self.instructions = [i for e in episodes for i in e["instruction"]]
        self.episodes = torch.cat([torch.full((len(e["tick"]),), n, dtype=torch.long) for n, e in enumerate(episodes)])
        self.ticks = torch.as_tensor(np.concatenate([e["tick"] for e in episodes]), dtype=torch.long)
        self.frames, self.frame_index = {}, {}
        for cam, topic in c.cameras.items():
            unique, inverse = np.unique(np.concatenate([e[cam] for e in episodes]), return_inverse=True)
            self.frames[cam] = self._decode(streams[topic], unique, cam)
            self.frame_index[cam] = torch.as_tensor(inverse, dtype=torch.long)
        self.report = {"episodes": self.episode_count, "samples": len(self.states), "skipped_ticks": self.skipped,
                       "messages": {t: len(s.messages) for t, s in streams.items()}}

    def _sample_episode(self, start: int, end: int) -> dict | None:
        """The samples of one episode window [start, end] (ns), or None when it has none."""
        c, streams = self.config, self.streams
        cameras = [streams[t] for t in c.cameras.values()]
        firsts = [s.stamps[s.stamps >= start] for s in (*cameras, self.joints)]
        if any(len(f) == 0 for f in firsts):
            return None  # an input never appears in this window
        period, max_age = c.period_ns, round(c.max_staleness * 1e9)
        ticks = control_ticks(max(int(f[0]) for f in firsts), end, period)
        frame_index = [latest_at(s.stamps, ticks, max_age, start) for s in cameras]
        joint_index = latest_at(self.joints.stamps, ticks, max_age, start)
        observed = (joint_index >= 0) & np.all([i >= 0 for i in frame_index], axis=0)
        if self.commands is not None:
            index = following_command(streams[c.action_topic].stamps, self.joints.stamps[np.maximum(joint_index, 0)],
                                      period, max_age, start)
            acted = (joint_index >= 0) & (index >= 0)
            tick_actions = self.commands[np.maximum(index, 0)]
        else:  # the next tick's joint positions
            following = np.append(joint_index[1:], -1)
            columns = [c.joint_names.index(n) for n in c.actions]
            acted, tick_actions = following >= 0, self.positions[np.maximum(following, 0)][:, columns]
        self.skipped["stale_or_missing_input"] += int((~observed).sum())
        self.skipped["no_fresh_action"] += int((observed & ~acted).sum())
        samples = np.flatnonzero(observed & acted)
        if len(samples) == 0:
            return None
        window = samples[:, None] + np.arange(self.chunk_size)[None, :]     # (n, chunk) tick indices
        inside = window < len(ticks)
        mask = inside & acted[np.minimum(window, len(ticks) - 1)]
        # Padding repeats the last valid action of the chunk (masked out of the loss anyway).
        last_valid = np.maximum.accumulate(np.where(mask, window, samples[:, None]), axis=1)
        return {"state": self.positions[joint_index[samples]], "actions": tick_actions[last_valid], "mask": mask,
                "instruction": self._instructions(ticks[samples]), "tick": ticks[samples],
                **{cam: index[samples] for cam, index in zip(c.cameras, frame_index)}}

    def _episodes(self, streams: dict[str, TopicStream], joints: TopicStream) -> list[tuple[int, int]]:
        c = self.config
        if c.episode_split == "bag":
            return [(int(joints.stamps[0]), int(joints.stamps[-1]))]
        if c.episode_split == "gap":
            return split_by_gap(joints.stamps, round(c.episode_gap * 1e9))
        markers = streams[c.episode_topic].stamps
        if len(markers) == 0:
            raise BagError(f"{self._source(c.episode_topic)}: no episode-start messages")
        return split_by_markers(markers, int(joints.stamps[-1]))

    def _instructions(self, ticks: np.ndarray) -> list[str]:
        stream = self.streams.get(self.config.instruction_topic) if self.config.instruction_topic else None
        if stream is None or len(stream.stamps) == 0:
            return [self.config.instruction] * len(ticks)
        index = np.searchsorted(stream.stamps, ticks, side="right") - 1
        return [stream.messages[i].data if i >= 0 else self.config.instruction for i in index]

    def _decode(self, stream: TopicStream, indices: np.ndarray, camera: str) -> torch.Tensor:
        source = self._source(stream.topic)
        expected = self.config.image_size.get(camera)
        images = []
        for i in indices:
            msg = stream.messages[i]
            if stream.msgtype.endswith("CompressedImage"):
                rgb = decode_compressed(msg.format, msg.data, source)
            else:
                rgb = decode_raw(msg.encoding, msg.height, msg.width, msg.step, msg.data, source)
            expected = expected or rgb.shape[:2]
            if rgb.shape[:2] != tuple(expected):
                stamp = stream.stamps[i] * 1e-9
                raise BagError(f"{source}: image at t={stamp:.3f}s is {rgb.shape[0]}x{rgb.shape[1]}, "
                               f"expected {expected[0]}x{expected[1]}")
            images.append(rgb)
        return torch.as_tensor(np.stack(images))


def _action_values(msg, msgtype: str, names: tuple[str, ...], source: str) -> np.ndarray:
    """One action (values of `names`) from a command message."""
    if msgtype == "sensor_msgs/msg/JointState":
        return joint_positions(msg, names, source)
    if msgtype == "trajectory_msgs/msg/JointTrajectory":
        if not msg.points:
            raise BagError(f"{source}: JointTrajectory without 'points'")
        return _by_name(list(msg.joint_names), msg.points[0].positions, names, source, "joint_names")
    if msgtype == "snapflow_interfaces/msg/ActionChunk":
        return _by_name(list(msg.joint_names), np.asarray(msg.actions)[: msg.action_dim], names, source,
                        "joint_names")
    data = np.asarray(msg.data, dtype=np.float64)  # Float64/32MultiArray: values in action_names order
    if data.shape != (len(names),):
        raise BagError(f"{source}: 'data' has {data.size} values for {len(names)} action names {list(names)}")
    return data


def _by_name(available: list[str], values, names: tuple[str, ...], source: str, field: str) -> np.ndarray:
    missing = [n for n in names if n not in available]
    if missing:
        raise BagError(f"{source}: joints {missing} missing from '{field}' (got {available})")
    if len(values) < len(available):
        raise BagError(f"{source}: {len(values)} values for {len(available)} '{field}'")
    out = np.array([values[available.index(n)] for n in names], dtype=np.float64)
    if not np.all(np.isfinite(out)):
        raise BagError(f"{source}: non-finite values in the action")
    return out
