"""The policy node's input side: camera, joint-state and instruction subscriptions whose
callbacks only decode and store into the ObservationAssembler (bad frames invalidate their
source, so no chunk is computed from them), and say when the inputs of one moment are all in."""

from __future__ import annotations

import time
from collections.abc import Callable

from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String

from snapflow_ros.errors import InputError
from snapflow_ros.ros.conversions import time_to_ns
from snapflow_ros.ros.parameters import PolicyNodeConfig
from snapflow_ros.ros.qos import LATCHED_QOS, OVERRIDABLE, SENSOR_QOS
from snapflow_ros.sensors.assembly import ObservationAssembler
from snapflow_ros.sensors.images import decode_compressed, decode_raw
from snapflow_ros.sensors.joints import joint_positions


class PolicyInputs:
    def __init__(self, node: Node, config: PolicyNodeConfig, counters: dict[str, int],
                 on_moment_complete: Callable[[], None], subscriptions: list) -> None:
        """Each subscription is appended to `subscriptions` as it is made (the node destroys them,
        also after a configure that failed half-way)."""
        self.config, self.counters, self.on_moment_complete = config, counters, on_moment_complete
        self.arrivals: dict[str, float] = {}  # source -> perf_counter() when its newest valid message came
        # A camera's frame size is fixed by its first frame: one of another size later holds.
        self.assembler = ObservationAssembler(config.cameras, config.joint_names, config.max_input_age,
                                              instruction=config.instruction, lock_image_shapes=True)
        for camera, topic, fmt in zip(config.cameras, config.camera_topics, config.camera_formats):
            subscriptions.append(node.create_subscription(CompressedImage if fmt == "compressed" else Image, topic,
                                                          self._image_callback(camera, topic), SENSOR_QOS,
                                                          **OVERRIDABLE))
        subscriptions.append(node.create_subscription(JointState, "joint_states", self.joint_state_callback,
                                                      SENSOR_QOS, **OVERRIDABLE))
        subscriptions.append(node.create_subscription(String, "instruction",
                                                      lambda msg: self.assembler.set_instruction(msg.data),
                                                      LATCHED_QOS, **OVERRIDABLE))

    def _image_callback(self, camera: str, topic: str):
        def callback(msg) -> None:
            self.counters["frames_received"] += 1
            try:
                if isinstance(msg, CompressedImage):
                    rgb = decode_compressed(msg.format, msg.data, topic)
                else:
                    rgb = decode_raw(msg.encoding, msg.height, msg.width, msg.step, msg.data, topic)
            except InputError as error:
                self.counters["frames_rejected"] += 1
                self.assembler.invalidate(f"camera:{camera}", time_to_ns(msg.header.stamp), str(error))
                return
            self.assembler.update_image(camera, time_to_ns(msg.header.stamp), rgb)
            self._arrived(f"camera:{camera}")
        return callback

    def joint_state_callback(self, msg: JointState) -> None:
        try:
            positions = joint_positions(msg, self.config.joint_names)
        except InputError as error:
            self.assembler.invalidate("joint_states", time_to_ns(msg.header.stamp), str(error))
            return
        self.assembler.update_joints(time_to_ns(msg.header.stamp), positions)
        self._arrived("joint_states")

    def last_arrival(self) -> float | None:
        """perf_counter() at which the newest of the inputs in store arrived (None before any)."""
        return max(self.arrivals.values(), default=None)

    def _arrived(self, source: str) -> None:
        self.arrivals[source] = time.perf_counter()
        # The inputs of one moment: every stamp within half an action step (a control tick).
        if self.assembler.in_step(self.config.action_dt / 2):
            self.on_moment_complete()
