"""Fault matrix, input side (issue 18): every fault over real rclpy, with the real policy_node
serving a small student (two cameras: a raw one and a compressed one) in this process.

For each fault: ZERO chunks on action_chunk and joint_trajectory from the invalid inputs (the
node's own counter and what a subscriber receives), the node says why (hold_reason and
/diagnostics), and, where the fault can end, publishing resumes once the inputs are valid again.
The README's fault table points here; test_sensor_inputs.py has the same rules without ROS.

Two patterns: a fault present from the start (nothing may ever be published, then the fix makes
the first chunk appear), or a fault injected mid-stream (after the node said why, nothing more
is published for WINDOW_S, then it resumes). Every test also checks, in process, that each
published chunk was decided from inputs that were neither stale nor from the future by the node's
clock at that moment, and that the clock had not gone back by its publication.
"""

from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import save_small_student

pytestmark = pytest.mark.ros

JOINTS = ["shoulder", "elbow", "wrist"]
POSITIONS = [0.1, 0.2, 0.3]
INSTRUCTION = "stack the blocks"
RATE_HZ = 20.0          # chunk timer
SENSOR_HZ = 30.0        # joint states and each camera
MAX_AGE_S = 0.3         # max_input_age
WINDOW_S = 0.5          # "nothing published" holds over this long: 10 chunk periods
RESUME_S = 3.0          # a node that resumes takes well under this (a 10 s clock jump would wedge it 10 s)
SIZE = 32               # camera frames, pixels
S = 1_000_000_000       # ns per second
# Every node of these tests in a namespace of their own: another session's nodes that happen to
# draw the same random domain (a soak, a demo) cannot feed, swap or hear them.
NAMESPACE = f"/fault_inputs_{os.getpid()}"


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    return save_small_student(tmp_path_factory.mktemp("fault_inputs") / "student", 0, cameras=("front", "wrist"),
                              state_dim=3, action_dim=3, chunk_size=6, width=32, num_heads=4, num_layers=1,
                              joint_names=tuple(JOINTS))


def _pattern(frame: int) -> np.ndarray:
    rgb = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    rgb[:, : frame % SIZE + 1, 1] = 200
    return rgb


def raw_frame(frame: int, shape: tuple[int, int] = (SIZE, SIZE)):
    """(encoding, height, width, step, data) of a valid bgr8 frame."""
    from snapflow_ros.sensors.images import encode_raw

    rgb = np.zeros((*shape, 3), dtype=np.uint8) if shape != (SIZE, SIZE) else _pattern(frame)
    return ("bgr8", *encode_raw(rgb, "bgr8"))


def jpeg_frame(frame: int, shape: tuple[int, int] = (SIZE, SIZE)) -> bytes:
    from snapflow_ros.sensors.images import encode_compressed

    rgb = np.zeros((*shape, 3), dtype=np.uint8) if shape != (SIZE, SIZE) else _pattern(frame)
    return encode_compressed(rgb, "jpeg")


def _sensors_class():
    from rclpy.node import Node
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CompressedImage, Image, JointState

    from snapflow_ros.ros.conversions import ns_to_time
    from snapflow_ros.ros.qos import SENSOR_QOS

    class Sensors(Node):
        """The robot side, faults set by the test: joint states and two cameras (a timer each, so a
        camera can stop alone), each stamped time_ns() + its offset; with sim_start_ns a simulated
        clock too, published on /clock at 100 Hz (clock_jump_ns shifts it, not the stamps)."""

        def __init__(self, sim_start_ns: int | None = None, **kwargs) -> None:
            super().__init__("fault_sensors", **kwargs)
            self.names, self.positions = list(JOINTS), list(POSITIONS)
            self.offset_ns = {"joints": 0, "front": 0, "wrist": 0}
            self.front = raw_frame    # frame number -> (encoding, height, width, step, data)
            self.wrist = jpeg_frame   # frame number -> compressed bytes
            self.frames = 0
            self.sim_start_ns, self.clock_jump_ns = sim_start_ns, 0
            self._started = time.monotonic_ns()
            self._joints = self.create_publisher(JointState, "joint_states", SENSOR_QOS)
            self._front = self.create_publisher(Image, "camera/front/image_raw", SENSOR_QOS)
            self._wrist = self.create_publisher(CompressedImage, "camera/wrist/compressed", SENSOR_QOS)
            self.timers_by_source = {
                "joints": self.create_timer(1 / SENSOR_HZ, self.publish_joints),
                "front": self.create_timer(1 / SENSOR_HZ, self.publish_front),
                "wrist": self.create_timer(1 / SENSOR_HZ, self.publish_wrist),
            }
            if sim_start_ns is not None:
                self._clock_out = self.create_publisher(Clock, "/clock", 10)
                self.create_timer(0.01, lambda: self._clock_out.publish(Clock(clock=ns_to_time(self.clock_ns()))))

        def time_ns(self) -> int:
            """Wall time (this node's clock), or the simulated time: sim_start_ns + time since start."""
            if self.sim_start_ns is None:
                return self.get_clock().now().nanoseconds
            return self.sim_start_ns + time.monotonic_ns() - self._started

        def clock_ns(self) -> int:
            return self.time_ns() + self.clock_jump_ns

        def stamp(self, msg, source: str):
            msg.header.stamp = ns_to_time(self.time_ns() + self.offset_ns[source])
            return msg

        def publish_joints(self) -> None:
            msg = self.stamp(JointState(), "joints")
            msg.name, msg.position = list(self.names), [float(p) for p in self.positions]
            self._joints.publish(msg)

        def publish_front(self) -> None:
            self.frames += 1
            msg = self.stamp(Image(), "front")
            msg.encoding, msg.height, msg.width, msg.step, msg.data = self.front(self.frames)
            self._front.publish(msg)

        def publish_wrist(self) -> None:
            msg = self.stamp(CompressedImage(), "wrist")
            msg.format, msg.data = "jpeg", self.wrist(self.frames)
            self._wrist.publish(msg)

    return Sensors


class Rig:
    """policy_node (the student, cameras front raw + wrist compressed) + Sensors + a probe that
    records action_chunk, joint_trajectory and /diagnostics."""

    def __init__(self, ros, student: Path, sim_start_ns: int | None = None, **params) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.node import Node
        from rclpy.parameter import Parameter
        from snapflow_interfaces.msg import ActionChunk as ActionChunkMsg
        from trajectory_msgs.msg import JointTrajectory

        from snapflow_ros.ros.policy_node import PolicyNode
        from snapflow_ros.ros.qos import COMMAND_QOS

        values = {"checkpoint": str(student), "joint_names": JOINTS, "cameras": ["front", "wrist"],
                  "camera_formats": ["raw", "compressed"], "instruction": INSTRUCTION, "chunk_rate_hz": RATE_HZ,
                  "action_dt": 0.05, "drop_stale_actions": False, "max_input_age": MAX_AGE_S,
                  "distillation": False, "allowed_roots": [str(student.parent)], **params}
        self.ros = ros
        self.node = ros.node(PolicyNode, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()],
                             namespace=NAMESPACE)
        assert self.node.lifecycle_state == "active", self.node.configure_error
        self.sensors = ros.node(_sensors_class(), sim_start_ns, namespace=NAMESPACE)
        self.probe = ros.node(Node, "fault_probe", namespace=NAMESPACE)
        self.chunks: list = []
        self.trajectories: list = []
        self.statuses: list = []
        self.probe.create_subscription(ActionChunkMsg, "action_chunk", self.chunks.append, COMMAND_QOS)
        self.probe.create_subscription(JointTrajectory, "joint_trajectory", self.trajectories.append, COMMAND_QOS)
        self.probe.create_subscription(DiagnosticArray, "/diagnostics", lambda m: self.statuses.extend(m.status), 10)
        # In process: the node's clock when it assembled the observation of each published chunk.
        self.published: list[tuple[int, int, int]] = []  # (clock at assembly, observation stamp, clock at publication)
        self.trajectories_published = 0  # by the node, on joint_trajectory (also those no subscriber saw)
        assemble, publish = self.node.assembler.assemble, self.node.chunk_publisher.publish
        publish_trajectory = self.node.trajectory_publisher.publish
        assembled: list[tuple[int, int]] = []

        def recording_assemble(now_ns: int):
            observation = assemble(now_ns)
            assembled[:] = [(now_ns, observation.stamp_ns)]
            return observation

        def recording_publish(msg) -> None:
            self.published.append((*assembled[0], self.node.get_clock().now().nanoseconds))
            publish(msg)

        def counting_publish_trajectory(msg) -> None:
            self.trajectories_published += 1
            publish_trajectory(msg)

        self.node.assembler.assemble, self.node.chunk_publisher.publish = recording_assemble, recording_publish
        self.node.trajectory_publisher.publish = counting_publish_trajectory

    @property
    def count(self) -> int:
        """Chunks the node published (its own counter: also those no subscriber saw)."""
        return self.node.counters["chunks_published"]

    def wait_reason(self, reason: str, timeout_s: float = 10.0) -> bool:
        return self.ros.spin_until(lambda: reason in self.node.hold_reason, timeout_s)

    def wait_chunks(self, n: int = 1, timeout_s: float = 10.0) -> bool:
        target = len(self.chunks) + n
        return self.ros.spin_until(lambda: len(self.chunks) >= target and len(self.trajectories) >= target, timeout_s)

    def said(self, reason: str) -> bool:
        """The reason on /diagnostics (published now rather than at the next 1 Hz tick)."""
        from diagnostic_msgs.msg import DiagnosticStatus

        self.statuses.clear()
        self.node.publish_diagnostics()
        name = self.node.get_fully_qualified_name()
        return self.ros.spin_until(lambda: any(s.name == name and reason in s.message
                                               and s.level == DiagnosticStatus.WARN for s in self.statuses), 5.0)

    def holds_from_the_start(self, reason: str) -> None:
        """The fault was there from the start: the node says why and never publishes anything."""
        assert self.wait_reason(reason), self.node.hold_reason
        self.ros.spin_for(WINDOW_S)
        assert reason in self.node.hold_reason, self.node.hold_reason
        assert self.count == 0 and self.trajectories_published == 0 and not self.chunks and not self.trajectories
        assert self.said(reason)

    def holds_from_now(self, reason: str) -> None:
        """The fault came mid-stream: once the node says why, no chunk is published."""
        assert self.wait_reason(reason), self.node.hold_reason
        published, trajectories = self.count, self.trajectories_published
        self.ros.spin_for(WINDOW_S)
        assert reason in self.node.hold_reason, self.node.hold_reason
        assert self.count == published and self.trajectories_published == trajectories == published
        # what was on the wire before has arrived (by sequence: the probe may have missed the very
        # first ones, published before it was matched), nothing after it
        assert self.ros.spin_until(lambda: self.chunks and self.chunks[-1].sequence == published - 1, 2.0)
        assert all(m.sequence < published for m in self.chunks)
        assert self.said(reason)

    def resumes(self, timeout_s: float = RESUME_S) -> float:
        """Seconds until the next chunk (and trajectory) arrives; the hold reason is gone."""
        started = time.monotonic()
        assert self.wait_chunks(1, timeout_s), self.node.hold_reason
        assert self.node.hold_reason == ""
        return time.monotonic() - started

    def check_published(self, future_tolerance_s: float) -> None:
        """Every published chunk came from inputs valid by the node's clock at assembly, and the
        clock had not gone back by its publication."""
        for assembled_ns, stamp_ns, published_ns in self.published:
            age_s = (assembled_ns - stamp_ns) / S
            assert -future_tolerance_s <= age_s <= MAX_AGE_S, age_s
            assert published_ns >= assembled_ns
        assert self.node.lifecycle_state == "active" and self.node._worker._thread.is_alive()


def _tolerance() -> float:
    from snapflow_ros.sensors.assembly import FUTURE_TOLERANCE_S

    return FUTURE_TOLERANCE_S


# --- joint states -------------------------------------------------------------------------------
@pytest.mark.parametrize("names, positions, reason", [
    (JOINTS, [0.1, math.nan, 0.3], "non-finite 'position' for joints ['elbow']"),
    (JOINTS, [0.1, 0.2, -math.inf], "non-finite 'position' for joints ['wrist']"),
    (JOINTS[:2], [0.1, 0.2], "joints ['wrist'] missing from 'name'"),
    (["j1", "j2", "j3"], POSITIONS, "joints ['shoulder', 'elbow', 'wrist'] missing from 'name'"),
], ids=["nan", "inf", "missing-joint", "renamed-joints"])
def test_invalid_joint_states_publish_nothing_until_valid(ros, student, names, positions, reason):
    rig = Rig(ros, student)
    rig.sensors.names, rig.sensors.positions = names, positions
    rig.holds_from_the_start(reason)
    rig.sensors.names, rig.sensors.positions = list(JOINTS), list(POSITIONS)
    rig.resumes()
    rig.check_published(_tolerance())


# --- camera frames ------------------------------------------------------------------------------
def _jpeg_garbage(frame: int) -> bytes:
    return jpeg_frame(frame)[:4] + bytes(range(256))  # a JPEG start marker, then no JPEG


def _jpeg_truncated(frame: int) -> bytes:
    data = jpeg_frame(frame)
    return data[: len(data) // 2]


@pytest.mark.parametrize("camera, frame, reason", [
    ("front", lambda n: ("16UC1", SIZE, SIZE, 2 * SIZE, bytes(2 * SIZE * SIZE)),
     "camera/front/image_raw: encoding '16UC1' not supported"),
    ("front", lambda n: ("yuv422", SIZE, SIZE, 2 * SIZE, bytes(2 * SIZE * SIZE)),
     "camera/front/image_raw: encoding 'yuv422' not supported"),
    # data length != height * step: short (a truncated frame) or long (the header does not describe it)
    ("front", lambda n: raw_frame(n)[:4] + (raw_frame(n)[4][: -3 * SIZE],),
     f"camera/front/image_raw: data has {3 * SIZE * (SIZE - 1)} bytes, step*height is {3 * SIZE * SIZE}"),
    ("front", lambda n: ("bgr8", SIZE - 1, *raw_frame(n)[2:]),
     f"camera/front/image_raw: data has {3 * SIZE * SIZE} bytes, step*height is {3 * SIZE * (SIZE - 1)}"),
    ("front", lambda n: ("bgr8", SIZE, SIZE, SIZE, bytes(SIZE * SIZE)),  # step < width * 3
     f"camera/front/image_raw: inconsistent image geometry height={SIZE} width={SIZE} step={SIZE}"),
    ("wrist", _jpeg_garbage, "camera/wrist/compressed: cannot decode jpeg data"),
    ("wrist", _jpeg_truncated, "camera/wrist/compressed: cannot decode jpeg data"),
], ids=["encoding-16UC1", "encoding-yuv422", "data-short", "data-long", "step-too-small", "corrupt-jpeg",
        "truncated-jpeg"])
def test_undecodable_camera_frames_publish_nothing_until_valid(ros, student, camera, frame, reason):
    rig = Rig(ros, student)
    setattr(rig.sensors, camera, frame)
    rig.holds_from_the_start(reason)
    assert rig.node.counters["frames_rejected"] > 0
    setattr(rig.sensors, camera, raw_frame if camera == "front" else jpeg_frame)
    rig.resumes()
    rig.check_published(_tolerance())


@pytest.mark.parametrize("camera", ["front", "wrist"], ids=["raw", "compressed"])
def test_a_frame_of_another_size_holds_until_the_size_is_back(ros, student, camera):
    # The policy resizes any frame, and checkpoints record no training frame size: a camera's size
    # is fixed by its first frame. A frame of another size later (the camera switched mode,
    # another camera on the topic) would be silently squashed into the policy's input.
    rig = Rig(ros, student)
    assert rig.wait_chunks(2)
    valid = getattr(rig.sensors, camera)
    setattr(rig.sensors, camera, lambda n: valid(n, shape=(48, 64)))
    rig.holds_from_now(f"camera:{camera} image has shape (48, 64, 3), expected (32, 32, 3) "
                       "(the size of its first frame")
    setattr(rig.sensors, camera, valid)
    rig.resumes()
    rig.check_published(_tolerance())


def test_the_first_frame_fixes_the_size_and_the_policy_resizes_it(ros, student):
    # A camera of another size than the policy's image_size (32) from the start is served: the
    # built-in family resizes every frame to image_size (processor.prepare_images). What is held is
    # a size change after the first frame (the test above).
    rig = Rig(ros, student)
    rig.sensors.front = lambda n: raw_frame(n, shape=(48, 64))
    assert rig.wait_chunks(2), rig.node.hold_reason
    assert rig.node.assembler.image_shapes["front"] == (48, 64) and rig.node.hold_reason == ""
    rig.check_published(_tolerance())


# --- stamps and clocks --------------------------------------------------------------------------
@pytest.mark.parametrize("source, name", [("joints", "joint_states"), ("front", "camera:front")],
                         ids=["joint-state", "camera-frame"])
def test_inputs_stamped_in_the_future_are_refused(ros, student, source, name):
    # 0.25 s ahead: beyond FUTURE_TOLERANCE_S (0.1 s; see sensors/assembly.py), although within
    # max_input_age (0.3 s here). 0.03 s ahead (clock sync, a sim's /clock steps) is accepted.
    assert 0.03 < _tolerance() < 0.25
    rig = Rig(ros, student)
    rig.sensors.offset_ns[source] = round(0.25 * S)
    rig.holds_from_the_start(f"{name} is stamped")
    assert "in the future (tolerance 0.1 s)" in rig.node.hold_reason
    rig.sensors.offset_ns[source] = round(0.03 * S)
    rig.resumes()
    rig.check_published(_tolerance())


def test_sensor_clock_jumps_against_the_node_wall_clock(ros, student):
    # What a sensor computer's clock stepping looks like from here: every stamp jumps 10 s back
    # (stale), then 10 s ahead (from the future); each time the clocks agree again, chunks resume at
    # once. (The node's own wall clock cannot be stepped here: no CAP_SYS_TIME.)
    rig = Rig(ros, student)
    assert rig.wait_chunks(2)
    for jump_s, reason in ((-10, "is stale: 10."), (10, "in the future")):
        rig.sensors.offset_ns = dict.fromkeys(rig.sensors.offset_ns, jump_s * S)
        rig.holds_from_now(reason)
        rig.sensors.offset_ns = dict.fromkeys(rig.sensors.offset_ns, 0)
        rig.resumes()
    now = rig.node.get_clock().now().nanoseconds
    assert all(abs(now - m.observation_stamp.sec * S - m.observation_stamp.nanosec) < 5 * S for m in rig.chunks)
    rig.check_published(_tolerance())


@pytest.mark.parametrize("watermark", [0.0, 0.5], ids=["timer", "watermark"])
def test_sim_clock_jumps_back_and_forward(ros, student, watermark):
    # use_sim_time: /clock jumps 10 s back (a simulation reset) while the sensors still stamp the
    # old timeline (10 s in the future of the new clock), then the sensors follow; then /clock jumps
    # 10 s forward while the sensors lag (10 s stale), then they follow. Nothing is published from
    # the inputs of the wrong timeline, chunks resume at once each time (no 10 s wedge of the chunk
    # in force, no burst of missed periods), the node stays up.
    start = 1000 * S
    rig = Rig(ros, student, sim_start_ns=start, use_sim_time=True, watermark=watermark)
    clock = rig.node.get_clock()
    assert rig.wait_chunks(3, 15.0), rig.node.hold_reason
    for jump, reason in ((-10 * S, "s in the future"), (10 * S, "s old (max 0.3 s)")):
        rig.sensors.clock_jump_ns += jump  # /clock jumps, the stamps stay on the old timeline
        assert ros.spin_until(lambda: abs(clock.now().nanoseconds - rig.sensors.clock_ns()) < S, 5.0)
        rig.holds_from_now(reason)
        assert 9.5 < float(re.search(r"(?:stale:|stamped) ([\d.]+) s", rig.node.hold_reason)[1]) < 10.5
        rig.sensors.offset_ns = dict.fromkeys(rig.sensors.offset_ns, rig.sensors.clock_jump_ns)  # they follow
        assert rig.resumes() < RESUME_S
        before = len(rig.chunks)
        ros.spin_for(1.0)
        assert len(rig.chunks) - before <= RATE_HZ + 3, "a burst after the jump"
        assert len(rig.chunks) - before >= 2, "chunks stopped again"
    rig.check_published(_tolerance())


def test_a_chunk_the_clock_jumped_back_across_during_inference_is_dropped(ros, student, monkeypatch):
    # The clock jumps back 1 s while the policy computes: the chunk's observation may now lie in
    # the clock's future, so it is not published; the next chunk (clock and stamps agree again) is.
    from rclpy.time import Time

    rig = Rig(ros, student, sim_start_ns=1000 * S, use_sim_time=True)
    assert rig.wait_chunks(2, 15.0), rig.node.hold_reason
    clock, policy = rig.node.get_clock(), rig.node.slot.policy
    predict, hold, reasons = policy.predict, rig.node._hold, []

    def jumping_back(*args, **kwargs):
        actions = predict(*args, **kwargs)
        if not any("during inference" in r for r in reasons):  # (the next /clock undoes the jump)
            clock.set_ros_time_override(Time(nanoseconds=clock.now().nanoseconds - S, clock_type=clock.clock_type))
        return actions

    monkeypatch.setattr(rig.node, "_hold", lambda reason: (reasons.append(reason), hold(reason)))
    monkeypatch.setattr(policy, "predict", jumping_back)
    assert ros.spin_until(lambda: any("clock jumped back" in r and "s during inference: chunk dropped" in r
                                      for r in reasons), 5.0), reasons
    rig.resumes()
    rig.check_published(_tolerance())  # (also: no chunk published with the clock behind its assembly)


def test_chunk_executor_forgets_a_chunk_in_force_from_before_a_backward_jump():
    # Without ROS, the rule behind the sim clock test: a chunk accepted at 100 s, then the clock
    # says 90 s. With a watermark the chunk in force would count as not yet started until 100.15 s
    # (a 10 s wedge); it is forgotten instead, and the chunks after the jump come at the usual
    # rate: no burst. A forward jump makes one chunk due, not one per missed watermark.
    from snapflow_ros.policy.chunk_executor import ChunkExecutor, ExecutorConfig, Trigger

    def chunks_in(executor: ChunkExecutor, start_ns: int, seconds: float) -> int:
        """Chunks accepted over `seconds` of inputs-complete triggers every ms (observations 2 ms old)."""
        accepted = 0
        for t in range(start_ns, start_ns + round(seconds * S), 1_000_000):
            if executor.due(t, Trigger.INPUTS_COMPLETE):
                executor.accept(np.zeros((6, 3)), t - 2_000_000, t, "p")
                accepted += 1
        return accepted

    ms = 1_000_000
    for chunking in ("plain", "rtc"):
        executor = ChunkExecutor(ExecutorConfig(action_dt_s=0.05, watermark=0.5, chunking=chunking))
        steady = chunks_in(executor, 100 * S, 1.0)  # a chunk of 0.3 s every 0.15 s
        assert 6 <= steady <= 7
        assert not executor.due(101 * S, Trigger.INPUTS_COMPLETE)  # the last one just started
        assert executor.check_clock(91 * S) > 9 * S and executor.current is None
        assert executor.upcoming_actions(91 * S) is None  # rtc: nothing from before the jump to continue
        executor.accept(np.zeros((6, 3)), 101 * S, 101 * S + 2 * ms, "p")
        assert not executor.due(101 * S + 3 * ms, Trigger.INPUTS_COMPLETE)
        assert executor.check_clock(101 * S - 40 * ms) == 0  # less than a step (50 ms) back: kept
        assert executor.due(91 * S, Trigger.INPUTS_COMPLETE)  # due() forgets it too
        assert chunks_in(executor, 91 * S, 1.0) == steady
        assert chunks_in(executor, 200 * S, 1.0) == steady  # forward: one due at once, then the rate


def test_empty_or_blank_instruction_holds_until_one_arrives(ros, student):
    from std_msgs.msg import String

    from snapflow_ros.ros.qos import LATCHED_QOS

    rig = Rig(ros, student, instruction="")
    rig.holds_from_the_start("no task instruction (got ''")
    instruction = rig.probe.create_publisher(String, "instruction", LATCHED_QOS)
    instruction.publish(String(data="   "))  # blank: the tokenizer strips it to no tokens at all
    assert rig.wait_reason("no task instruction (got '   '")
    rig.ros.spin_for(WINDOW_S)
    assert rig.count == 0 and not rig.chunks and rig.said("no task instruction")
    instruction.publish(String(data=INSTRUCTION))
    rig.resumes()
    rig.check_published(_tolerance())


def test_a_camera_that_stops_holds_and_resumes_when_it_is_back(ros, student):
    rig = Rig(ros, student)
    assert rig.wait_chunks(2)
    timer = rig.sensors.timers_by_source["wrist"]
    timer.cancel()  # the wrist camera stops; joint states and the front camera go on
    stopped, published = time.monotonic(), rig.count
    assert rig.wait_reason("camera:wrist is stale")
    # its last frame (up to one camera period old at the stop) served until it was max_input_age old
    assert time.monotonic() - stopped >= MAX_AGE_S - 1 / SENSOR_HZ - 0.02 and rig.count > published
    rig.holds_from_now("camera:wrist is stale")
    timer.reset()
    rig.resumes()
    rig.check_published(_tolerance())


def test_a_camera_node_that_goes_away_holds_and_resumes_when_a_new_one_comes(ros, student):
    # The wrist camera is a node of its own (the fake camera of the demos): destroyed, its last frame
    # turns stale; a new camera node on the topic (the driver restarted) brings chunks back.
    from snapflow_ros.ros.fake_sensors import FakeCameraPublisher

    rig = Rig(ros, student)
    rig.sensors.timers_by_source["wrist"].cancel()  # (before any spin: Sensors never publishes it)

    def camera():
        return ros.node(FakeCameraPublisher, "camera/wrist/compressed", "jpeg", rate_hz=SENSOR_HZ, size=SIZE,
                        namespace=NAMESPACE)

    wrist = camera()
    assert rig.wait_chunks(2), rig.node.hold_reason
    ros.executor.remove_node(wrist)
    ros.nodes.remove(wrist)
    wrist.destroy_node()
    rig.holds_from_now("camera:wrist is stale")
    camera()
    rig.resumes()
    rig.check_published(_tolerance())


def test_an_instruction_longer_than_the_tokenizer_limit_holds(ros, student):
    """The built-in reads max_instruction_tokens (64) UTF-8 bytes; a longer instruction would be
    truncated to part of the task, so the node holds, naming the length and the limit, and
    resumes with one that fits."""
    from std_msgs.msg import String

    from snapflow_ros.ros.qos import LATCHED_QOS

    long_instruction = "put the white mug on the left plate, then close the top drawer"
    too_long = long_instruction + " of the cabinet"
    assert (len(long_instruction), len(too_long)) == (62, 77)
    rig = Rig(ros, student, instruction=long_instruction)
    assert rig.wait_chunks(2), rig.node.hold_reason  # 62 of 64: served whole
    instruction = rig.probe.create_publisher(String, "instruction", LATCHED_QOS)
    instruction.publish(String(data=too_long))
    rig.holds_from_now(f"instruction {too_long!r} takes 77 tokens, student@")
    assert "reads 64: it would act on a truncated task" in rig.node.hold_reason
    instruction.publish(String(data=INSTRUCTION))
    rig.resumes()
    rig.check_published(_tolerance())


# --- the policy ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fault, reason", [
    ("nan", "returned non-finite actions (18 of 18 values NaN or inf)"),
    ("raises", "inference failed: RuntimeError: device lost"),
], ids=["nan-actions", "raises"])
def test_a_failing_policy_holds_and_publishes_nothing(ros, student, monkeypatch, fault, reason):
    rig = Rig(ros, student)
    assert rig.wait_chunks(2)
    policy = rig.node.slot.policy
    predict, failing = policy.predict, {"on": True}

    def faulty(*args, **kwargs):
        actions = predict(*args, **kwargs)
        if failing["on"] and fault == "raises":
            raise RuntimeError("device lost")
        return actions * np.nan if failing["on"] else actions

    monkeypatch.setattr(policy, "predict", faulty)
    rig.holds_from_now(reason)
    failing["on"] = False
    rig.resumes()
    rig.check_published(_tolerance())
