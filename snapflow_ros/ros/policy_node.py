"""policy_node: cameras + joint states + instruction in, stamped action chunks out.

Subscribes:  <camera_topics> (sensor_msgs/Image or CompressedImage, per camera_formats)
             joint_states (sensor_msgs/JointState), instruction (std_msgs/String, latched)
Publishes:   action_chunk (snapflow_interfaces/ActionChunk)
             joint_trajectory (trajectory_msgs/JointTrajectory, for joint_trajectory_controller)
             /diagnostics (diagnostic_msgs/DiagnosticArray)
Services:    ~/hold (std_srvs/SetBool): true stops publishing at once, false resumes
             distillation from bags (see ros/distillation.py), unless distillation is false
Callbacks only store messages; inference runs on one worker thread, woken by the chunk timer
(and, with a watermark, as soon as the camera frames and joint state of one moment are in);
a new policy loads on a loader thread beside the serving one.
Relative topic names: remap them or push the node into a namespace.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import replace
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image, JointState
from snapflow_interfaces.msg import ActionChunk as ActionChunkMsg
from std_msgs.msg import String
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from snapflow_ros.bags.config import BagDatasetConfig
from snapflow_ros.errors import ConfigError, InputError, SnapflowError
from snapflow_ros.policy import ActionChunk, HoldPositionPolicy
from snapflow_ros.policy.chunk_timing import blend_overlap, drop_stale
from snapflow_ros.ros.conversions import chunk_to_msg, chunk_to_trajectory, time_to_ns
from snapflow_ros.ros.diagnostics import node_status
from snapflow_ros.ros.distillation import DistillationService
from snapflow_ros.ros.parameters import (
    POLICY_NODE_PARAMETERS,
    declare_parameters,
    read_policy_node_config,
)
from snapflow_ros.ros.qos import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS
from snapflow_ros.ros.spin import spin_node
from snapflow_ros.runtime.serving import PolicySlot, check_policy_source, load_served_policy
from snapflow_ros.sensors.assembly import HoldError, ObservationAssembler
from snapflow_ros.sensors.images import decode_compressed, decode_raw
from snapflow_ros.sensors.joints import joint_positions

RELOAD_PARAMETERS = ("checkpoint", "backend", "denoising_steps")


class PolicyNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("policy_node", **kwargs)
        try:
            self._configure()
        except Exception:
            self.destroy_node()  # a node that failed to configure must not linger in the graph
            raise

    def _configure(self) -> None:
        declare_parameters(self, POLICY_NODE_PARAMETERS)
        self.config = c = read_policy_node_config(self)
        self.slot = PolicySlot(self._load(c.checkpoint, c.backend, c.denoising_steps))
        self.serving_source = {name: getattr(c, name) for name in RELOAD_PARAMETERS}
        self.last_swap_error = ""
        self._reverting = False
        self._pending_swap: dict | None = None
        self._swap_lock = threading.Lock()
        self.assembler = ObservationAssembler(c.cameras, c.joint_names, c.max_input_age,
                                              instruction=c.instruction)
        self.hold_reason = "waiting for inputs"
        self.held = False
        self.latencies_ms: deque[float] = deque(maxlen=200)
        self.counters = {"chunks_published": 0, "frames_received": 0, "frames_rejected": 0,
                         "swaps": 0, "swap_failures": 0}
        self._previous: tuple[str, np.ndarray, int] | None = None  # policy id, actions, start
        self._sequence = 0

        # QoS is set per topic the ROS way: qos_overrides.<topic>.<entity>.<policy> parameters.
        overridable = {"qos_overriding_options": QoSOverridingOptions.with_default_policies()}
        for camera, topic, fmt in zip(c.cameras, c.camera_topics, c.camera_formats):
            message_type = CompressedImage if fmt == "compressed" else Image
            self.create_subscription(message_type, topic, self._image_callback(camera, topic), SENSOR_QOS,
                                     **overridable)
        self.create_subscription(JointState, "joint_states", self.joint_state_callback, SENSOR_QOS,
                                 **overridable)
        self.create_subscription(String, "instruction", self.instruction_callback, LATCHED_QOS,
                                 **overridable)
        self.chunk_publisher = self.create_publisher(ActionChunkMsg, "action_chunk", COMMAND_QOS, **overridable)
        self.trajectory_publisher = self.create_publisher(JointTrajectory, "joint_trajectory", COMMAND_QOS,
                                                          **overridable)
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(SetBool, "~/hold", self.hold_callback)
        self.add_on_set_parameters_callback(self.parameters_callback)
        self.add_post_set_parameters_callback(self.committed_parameters_callback)
        self._tick = threading.Event()
        self._stop = threading.Event()
        self.create_timer(1.0 / c.chunk_rate_hz, self._tick.set)
        self.create_timer(1.0, self.publish_diagnostics)
        self._worker = threading.Thread(target=self._work, name="policy_worker", daemon=True)
        self._worker.start()
        self.distillation = None
        if c.distillation:
            self.distillation = DistillationService(self, self.recorded_dataset_config, self._swap_to_student,
                                                    c.distillation_niceness, c.distillation_threads)
        self.get_logger().info(f"serving {self.slot.policy.policy_id} for joints {list(c.joint_names)}, "
                               f"cameras {list(c.cameras)} at {c.chunk_rate_hz:g} Hz")

    # --- loading and hot swap ---------------------------------------------------------------
    def _load(self, checkpoint: str, backend: str, steps: int):
        c = self.config
        if not checkpoint:
            return HoldPositionPolicy(len(c.joint_names), c.action_horizon)
        policy = load_served_policy(Path(checkpoint), backend, c.device, steps)
        if policy.action_dim != len(c.joint_names):
            raise ConfigError(f"{checkpoint}: policy has {policy.action_dim} action dims, joint_names "
                              f"lists {len(c.joint_names)}")
        missing = [cam for cam in policy.cameras if cam not in c.cameras]
        if missing:
            raise ConfigError(f"{checkpoint}: policy needs cameras {missing}, not in 'cameras' {list(c.cameras)}")
        return policy

    def parameters_callback(self, parameters) -> SetParametersResult:
        changes = {p.name: p.value for p in parameters}
        # (our own revert after a failed swap has nothing to load)
        if not self._reverting and any(name in changes for name in RELOAD_PARAMETERS):
            target = {name: changes.get(name, getattr(self.config, name)) for name in RELOAD_PARAMETERS}
            try:
                check_policy_source(target["checkpoint"], target["backend"])
            except SnapflowError as error:  # cheap checks answer the parameter request itself
                return self._swap_failed(str(error))
            self._pending_swap = target  # loads once the change is committed (post-set callback)
        if "max_input_age" in changes:
            self.assembler.max_age_s = changes["max_input_age"]
        if "instruction" in changes:
            self.assembler.set_instruction(changes["instruction"])
        known = {k: v for k, v in changes.items() if hasattr(self.config, k)}
        self.config = replace(self.config, **known)
        return SetParametersResult(successful=True)

    def committed_parameters_callback(self, parameters) -> None:
        target, self._pending_swap = self._pending_swap, None
        if target is not None:
            # Loading and warm-up run beside the serving policy; the executor keeps spinning.
            threading.Thread(target=self._swap, args=(target,), name="policy_loader", daemon=True).start()

    def _swap(self, target: dict) -> None:
        serving = self.slot.policy
        with self._swap_lock:
            try:
                policy = self._load(target["checkpoint"], target["backend"], target["denoising_steps"])
            except (SnapflowError, OSError) as error:
                self._swap_failed(str(error))
                # Report the failure where it was asked for: the parameters go back to what serves.
                self._reverting = True
                try:
                    self.set_parameters([Parameter(name, value=self.serving_source[name])
                                         for name in RELOAD_PARAMETERS])
                finally:
                    self._reverting = False
                return
            self.slot.swap(policy)  # between chunks: the worker takes one reference per chunk
            self.serving_source = dict(target)
            self.counters["swaps"] += 1
            self.get_logger().info(f"swapped {serving.policy_id} -> {policy.policy_id}")

    def _swap_to_student(self, job_id: str, student: str) -> str:
        """A finished distillation job's student goes through the same checked hot swap."""
        if self.config.backend != "torch":
            return (f"not swapped: this node serves the {self.config.backend} backend; export the student "
                    f"and set 'checkpoint' to the export")
        result = self.set_parameters([Parameter("checkpoint", value=student)])[0]
        if not result.successful:
            return f"swap refused: {result.reason}"
        return "swap requested: loading beside the serving policy"

    def recorded_dataset_config(self) -> BagDatasetConfig:
        """How bags recorded from this node's own input topics are read; the action of a tick is
        the next tick's joint positions (commands may be on any controller's topic)."""
        c = self.config
        return BagDatasetConfig(
            cameras={cam: self.resolve_topic_name(topic) for cam, topic in zip(c.cameras, c.camera_topics)},
            joint_names=c.joint_names, joint_state_topic=self.resolve_topic_name("joint_states"),
            instruction_topic=self.resolve_topic_name("instruction"), instruction=c.instruction,
            action_source="next_state", rate_hz=1.0 / c.action_dt, max_staleness=c.max_input_age)

    def _swap_failed(self, reason: str) -> SetParametersResult:
        self.counters["swap_failures"] += 1
        self.last_swap_error = reason
        self.get_logger().error(f"policy swap failed, still serving {self.slot.policy.policy_id}: {reason}")
        return SetParametersResult(successful=False, reason=reason)

    # --- callbacks: store only ------------------------------------------------------------------
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
            self._observation_arrived()
        return callback

    def joint_state_callback(self, msg: JointState) -> None:
        try:
            positions = joint_positions(msg, self.config.joint_names)
        except InputError as error:
            self.assembler.invalidate("joint_states", time_to_ns(msg.header.stamp), str(error))
            return
        self.assembler.update_joints(time_to_ns(msg.header.stamp), positions)
        self._observation_arrived()

    def _observation_arrived(self) -> None:
        # With a watermark, a due chunk starts as soon as the inputs of one moment are all in (the
        # stamps of a control tick: within half an action step), not at the next timer tick.
        if self.config.watermark > 0 and self.assembler.in_step(self.config.action_dt / 2):
            self._tick.set()

    def instruction_callback(self, msg: String) -> None:
        self.assembler.set_instruction(msg.data)

    def hold_callback(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        self.held = request.data
        response.success = True
        response.message = "holding: no chunks are published" if self.held else "publishing"
        self.get_logger().info(response.message)
        return response

    # --- the worker: one chunk per tick ---------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            if self._tick.wait(timeout=0.2):
                self._tick.clear()
                try:
                    self.compute_and_publish()
                except Exception as error:  # never let the worker die silently
                    self._hold(f"inference failed: {type(error).__name__}: {error}")

    def compute_and_publish(self) -> None:
        if self.held:
            return
        policy = self.slot.policy  # one policy for the whole chunk
        c = self.config
        if c.watermark > 0 and self._previous is not None:
            _, previous_actions, previous_start = self._previous
            executed = (self.get_clock().now().nanoseconds - previous_start) * 1e-9
            if executed < c.watermark * len(previous_actions) * c.action_dt:
                return  # the previous chunk still has enough ahead of it
        try:
            observation = self.assembler.assemble(self.get_clock().now().nanoseconds)
        except HoldError as error:
            self._hold(str(error))
            return
        started = time.perf_counter()
        actions = policy.predict(observation, seed=self._sequence)
        latency = time.perf_counter() - started
        if actions.shape != (actions.shape[0], len(c.joint_names)) or not np.all(np.isfinite(actions)):
            self._hold(f"policy {policy.policy_id} returned invalid actions {actions.shape}")
            return
        now_ns = self.get_clock().now().nanoseconds
        start_ns = observation.stamp_ns
        if c.drop_stale_actions:
            actions, start_ns = drop_stale(actions, observation.stamp_ns, c.action_dt, now_ns)
        if c.blend_decay > 0 and self._previous and self._previous[0] == policy.policy_id:
            actions = blend_overlap(self._previous[1], self._previous[2], actions, start_ns, c.action_dt,
                                    c.blend_decay)
        if self.held:  # hold may have arrived during inference
            return
        chunk = ActionChunk(actions=actions.astype(np.float32), joint_names=c.joint_names, dt_s=c.action_dt,
                            policy_id=policy.policy_id, denoising_steps=policy.steps,
                            observation_stamp_ns=observation.stamp_ns, start_ns=start_ns,
                            inference_latency_s=latency, sequence=self._sequence)
        if self.hold_reason:
            self.get_logger().info("inputs valid: publishing chunks")
            self.hold_reason = ""
        self.chunk_publisher.publish(chunk_to_msg(chunk))
        self.trajectory_publisher.publish(chunk_to_trajectory(chunk))
        self._previous = (policy.policy_id, actions, start_ns)
        self._sequence += 1
        self.counters["chunks_published"] += 1
        self.latencies_ms.append(latency * 1e3)

    def _hold(self, reason: str) -> None:
        if reason != self.hold_reason:
            self.get_logger().warning(f"holding (no chunk published): {reason}")
        self.hold_reason = reason

    def publish_diagnostics(self) -> None:
        status = node_status(self.get_fully_qualified_name(), self.slot.policy, self.config.backend,
                             self.hold_reason, self.held, list(self.latencies_ms),
                             self.assembler.ages_s(self.get_clock().now().nanoseconds), self.counters,
                             self.last_swap_error)
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_publisher.publish(array)

    def destroy_node(self) -> None:
        if getattr(self, "distillation", None) is not None:
            self.distillation.shutdown()
        if hasattr(self, "_stop"):
            self._stop.set()
            self._worker.join(timeout=5.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    spin_node("policy_node", PolicyNode, args)


if __name__ == "__main__":
    main()
