"""ObservationAssembler: the newest value of every input, checked before it may reach a policy.

Callbacks store (latest-value hold); `assemble(now)` builds one Observation or raises HoldError
saying which input is missing, stale (header stamp older than max_age), from the future (stamped
more than future_tolerance_s ahead of now), non-finite or of the wrong shape, or that the
instruction is empty. The node never infers from anything that did not pass here.

Inputs from the future: a stamp ahead of the node's clock means the two clocks disagree (a sensor
computer's clock stepped, a simulation reset, a bag replayed against the wrong clock); such an
input cannot be placed in time, so it is refused. FUTURE_TOLERANCE_S absorbs what is not a clock
fault: clock sync between machines (chrony / PTP: well under 10 ms) and the quantisation of a
simulated /clock (gazebo_ros publishes it at 10 Hz by default: up to 0.1 s behind the stamps of
the sensors it simulates).

Image sizes: with lock_image_shapes, a camera's frame size is fixed by its first valid frame (the
checkpoints record no training frame size and the families resize any frame, so the node cannot
ask the policy); a frame of another size later (a camera switched to another mode, another camera
on the topic) holds until frames of that size come back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from threading import Lock

import numpy as np

from snapflow_ros.errors import HoldError, InputError
from snapflow_ros.policy.observation import Observation

FUTURE_TOLERANCE_S = 0.1  # how far ahead of now an input may be stamped (see the module)


@dataclass
class _Stamped:
    stamp_ns: int
    value: object


@dataclass
class ObservationAssembler:
    cameras: tuple[str, ...]
    joint_names: tuple[str, ...]
    max_age_s: float
    image_shapes: dict[str, tuple[int, int]] = field(default_factory=dict)  # camera -> (H, W), optional
    instruction: str = ""
    future_tolerance_s: float = FUTURE_TOLERANCE_S
    lock_image_shapes: bool = False  # the first valid frame of a camera without a shape fixes it
    _locked: set[str] = field(default_factory=set, init=False)  # cameras whose shape a first frame fixed
    _latest: dict[str, _Stamped] = field(default_factory=dict, init=False)
    _lock: Lock = field(default_factory=Lock, init=False)

    def update_image(self, camera: str, stamp_ns: int, rgb: np.ndarray) -> None:
        with self._lock:
            if self.lock_image_shapes and camera not in self.image_shapes and rgb.ndim == 3:
                self.image_shapes[camera] = tuple(rgb.shape[:2])
                self._locked.add(camera)
            self._latest[f"camera:{camera}"] = _Stamped(stamp_ns, rgb)

    def update_joints(self, stamp_ns: int, positions: np.ndarray) -> None:
        """`positions` already in joint_names order (see sensors.joints.joint_positions)."""
        with self._lock:
            self._latest["joint_states"] = _Stamped(stamp_ns, positions)

    def invalidate(self, name: str, stamp_ns: int, reason: str) -> None:
        """The newest message of `name` ("camera:<c>" or "joint_states") was unusable: hold until a
        valid one replaces it, rather than falling back to an older one."""
        with self._lock:
            self._latest[name] = _Stamped(stamp_ns, InputError(reason))

    def set_instruction(self, text: str) -> None:
        with self._lock:
            self.instruction = text

    def ages_s(self, now_ns: int) -> dict[str, float]:
        with self._lock:
            return {name: (now_ns - item.stamp_ns) * 1e-9 for name, item in self._latest.items()}

    @property
    def inputs(self) -> list[str]:
        """The names an observation needs: every camera and the joint states."""
        return [f"camera:{c}" for c in self.cameras] + ["joint_states"]

    def in_step(self, tolerance_s: float) -> bool:
        """True when every input has a message and their stamps lie within `tolerance_s`: the
        newest messages belong to one moment (e.g. the camera frame and joint state of one tick)."""
        names = self.inputs
        with self._lock:
            stamps = [self._latest[n].stamp_ns for n in names if n in self._latest]
        return len(stamps) == len(names) and (max(stamps) - min(stamps)) * 1e-9 <= tolerance_s

    def assemble(self, now_ns: int) -> Observation:
        with self._lock:
            latest = dict(self._latest)
            instruction = self.instruction
        names = self.inputs
        missing = [n for n in names if n not in latest]
        if missing:
            raise HoldError(f"no message yet on {missing}")
        for name in names:
            if isinstance(latest[name].value, InputError):
                raise HoldError(str(latest[name].value))
            age = (now_ns - latest[name].stamp_ns) * 1e-9
            if age > self.max_age_s:
                raise HoldError(f"{name} is stale: {age:.3f} s old (max {self.max_age_s:g} s)")
            if age < -self.future_tolerance_s:
                raise HoldError(f"{name} is stamped {-age:.3f} s in the future (tolerance "
                                f"{self.future_tolerance_s:g} s): its clock and this node's disagree")
        images = {}
        for camera in self.cameras:
            image = latest[f"camera:{camera}"].value
            expected = self.image_shapes.get(camera)
            if image.ndim != 3 or image.shape[2] != 3 or (expected and image.shape[:2] != tuple(expected)):
                since = (" (the size of its first frame: a camera whose frame size changes is held until "
                         "frames of that size come back or the node is configured again)"
                         if camera in self._locked else "")
                raise HoldError(f"camera:{camera} image has shape {image.shape}, expected "
                                f"{(*expected, 3) if expected else '(H, W, 3)'}{since}")
            images[camera] = image
        state = np.asarray(latest["joint_states"].value, dtype=np.float64)
        if state.shape != (len(self.joint_names),):
            raise HoldError(f"joint_states has {state.shape} values, expected {len(self.joint_names)}")
        if not instruction.strip():  # blank is empty: the tokenizers strip it to nothing
            raise HoldError(f"no task instruction (got {instruction!r}; set the 'instruction' topic or parameter)")
        try:
            return Observation(state=state, images=images, instruction=instruction,
                               stamp_ns=min(latest[n].stamp_ns for n in names))
        except InputError as error:
            raise HoldError(str(error)) from None
