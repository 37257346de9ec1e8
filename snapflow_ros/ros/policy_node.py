"""policy_node: cameras + joint states + instruction in, stamped action chunks out (a lifecycle node).

Subscribes:  <camera_topics> (sensor_msgs/Image or CompressedImage, per camera_formats)
             joint_states (sensor_msgs/JointState), instruction (std_msgs/String, latched)
Publishes:   action_chunk (snapflow_interfaces/ActionChunk)
             joint_trajectory (trajectory_msgs/JointTrajectory, for joint_trajectory_controller)
             /diagnostics (diagnostic_msgs/DiagnosticArray)
Services:    ~/hold (std_srvs/SetBool): true stops publishing at once, false resumes
             distillation from bags (see ros/distillation.py), unless distillation is false
Lifecycle:   configure loads, warms up and checks the policy (a failure stays unconfigured and
             says why); activate publishes; deactivate holds; cleanup / shutdown release the
             policy. `autostart` does configure + activate at start.
Callbacks only store messages; inference runs on one worker thread, woken by the chunk timer
and, with a watermark, as soon as the camera frames and joint state of one moment are in. The
ChunkExecutor (shared with the simulated rollout) decides what is due and what is published.
Relative topic names: remap them or push the node into a namespace.
"""

from __future__ import annotations

import re
import time
from collections import deque
from dataclasses import replace

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from snapflow_interfaces.msg import ActionChunk as ActionChunkMsg
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from snapflow_ros.bags.config import BagDatasetConfig
from snapflow_ros.errors import ConfigError, HoldError, InputError, SnapflowError
from snapflow_ros.policy import ActionChunk
from snapflow_ros.policy.chunk_executor import ChunkExecutor, Trigger
from snapflow_ros.ros.conversions import chunk_to_msg, chunk_to_trajectory
from snapflow_ros.ros.diagnostics import node_status
from snapflow_ros.ros.distillation import DistillationService
from snapflow_ros.ros.hot_swap import RELOAD_PARAMETERS, HotSwap, load_for_node
from snapflow_ros.ros.parameters import (
    POLICY_NODE_PARAMETERS,
    PolicyNodeConfig,
    declare_parameters,
    read_policy_node_config,
    startup_allowed_roots,
)
from snapflow_ros.ros.policy_inputs import PolicyInputs
from snapflow_ros.ros.qos import COMMAND_QOS, OVERRIDABLE
from snapflow_ros.ros.spin import spin_node
from snapflow_ros.runtime.chunk_worker import ChunkWorker
from snapflow_ros.runtime.serving import PolicySlot, chunk_continuation

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE
NUMBERS = re.compile(r"\d+(\.\d+)?")  # in hold reasons: what changes without changing the reason


class PolicyNode(LifecycleNode):
    def __init__(self, **kwargs) -> None:
        super().__init__("policy_node", **kwargs)
        declare_parameters(self, POLICY_NODE_PARAMETERS)
        self.allowed_roots = startup_allowed_roots(self)
        self.config: PolicyNodeConfig | None = None  # set while configured
        self.configure_error = ""
        self.counters = {"chunks_published": 0, "frames_received": 0, "frames_rejected": 0,
                         "swaps": 0, "swap_failures": 0}
        self.slot = PolicySlot()
        self.swap = HotSwap(self, self.slot, self._load, self.counters, self.allowed_roots)
        self.active = self.held = False
        self.hold_reason = "not active"
        # Recent inference latencies, and the node's own time per chunk: from the arrival of the
        # observation's last input to publication, less inference (snapflow bench-node reads it).
        self.timings_ms: dict[str, deque[float]] = {"inference_latency": deque(maxlen=200),
                                                    "node_overhead": deque(maxlen=2000)}
        self._entities: list = []  # what configure creates and cleanup destroys
        self.chunk_publisher = self.trajectory_publisher = None
        self._worker: ChunkWorker | None = None
        self._sequence = 0
        self._warned_no_prefix: set[str] = set()  # policies warned about once: rtc without a trained prefix
        self.add_on_set_parameters_callback(self.parameters_callback)
        self.add_post_set_parameters_callback(self.swap.committed)
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self.publish_diagnostics)
        self.distillation = None
        if self.get_parameter("distillation").value:  # jobs run in their own processes, in any state
            self.distillation = DistillationService(
                self, self.recorded_dataset_config,
                lambda job, student: self.swap.to_student(student, self.get_parameter("backend").value),
                self.allowed_roots,
                self.get_parameter("distillation_niceness").value, self.get_parameter("distillation_threads").value)
        if self.get_parameter("autostart").value and self.trigger_configure() == SUCCESS:
            self.trigger_activate()

    # --- lifecycle ------------------------------------------------------------------------------
    @property
    def lifecycle_state(self) -> str:
        """unconfigured, inactive, active or finalized."""
        return self._state_machine.current_state[1]

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as error:  # noqa: BLE001 - whatever it was, the node stays unconfigured and says why
            self._release()
            reason = str(error) if isinstance(error, (SnapflowError, OSError)) else f"{type(error).__name__}: {error}"
            self.configure_error = reason
            self.get_logger().error(f"configure failed, staying unconfigured: {reason}")
            return FAILURE
        self.configure_error = ""
        return SUCCESS

    def _configure(self) -> None:
        c = read_policy_node_config(self)
        checkpoint = str(self.allowed_roots.check(c.checkpoint, "checkpoint")) if c.checkpoint else ""
        policy = load_for_node(c, checkpoint, c.backend, c.denoising_steps)
        self.slot.swap(policy)
        self.swap.serving_source = {name: getattr(c, name) for name in RELOAD_PARAMETERS}
        self.chunks = ChunkExecutor(c.executor_config())
        # With a watermark, a due chunk starts as soon as the inputs of one moment are all in,
        # not at the next timer tick.
        self.inputs = PolicyInputs(self, c, self.counters, self._moment_complete, self._entities)
        self.assembler = self.inputs.assembler
        self._entities.append(self.create_service(SetBool, "~/hold", self.hold_callback))
        self._entities.append(self.create_timer(1.0 / c.chunk_rate_hz, lambda: self._request(Trigger.PERIOD)))
        self.chunk_publisher = self.create_lifecycle_publisher(ActionChunkMsg, "action_chunk", COMMAND_QOS,
                                                               **OVERRIDABLE)
        self.trajectory_publisher = self.create_lifecycle_publisher(JointTrajectory, "joint_trajectory",
                                                                    COMMAND_QOS, **OVERRIDABLE)
        self._worker = ChunkWorker(self.serve, lambda error: self._hold(
            f"inference failed: {type(error).__name__}: {error}"))
        self.config = c  # last: parameter changes act on a configured node only (subscriptions declare some)
        self.get_logger().info(f"configured: {policy.policy_id} for joints {list(c.joint_names)}, "
                               f"cameras {list(c.cameras)} at {c.chunk_rate_hz:g} Hz")

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.chunks.reset()  # the first chunk after a pause starts afresh
        self.active, self.hold_reason = True, "waiting for inputs"
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active, self.hold_reason = False, "not active"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = False
        self._release()
        return SUCCESS

    def _release(self) -> None:
        self.swap.generation += 1  # a load still running is dropped when it finishes
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        for entity in self._entities:
            destroy = {"Subscription": self.destroy_subscription, "Timer": self.destroy_timer,
                       "Service": self.destroy_service}[type(entity).__name__]
            destroy(entity)
        self._entities.clear()
        for publisher in (self.chunk_publisher, self.trajectory_publisher):
            if publisher is not None:
                self.destroy_lifecycle_publisher(publisher)
        self.chunk_publisher = self.trajectory_publisher = None
        self.slot.swap(None)
        self.config = None

    # --- loading and parameters -----------------------------------------------------------------
    def _load(self, checkpoint: str, backend: str, steps: int):
        config = self.config
        if config is None:
            raise ConfigError("the node was cleaned up while the policy loaded")
        return load_for_node(config, checkpoint, backend, steps)

    def parameters_callback(self, parameters) -> SetParametersResult:
        changes = {p.name: p.value for p in parameters}
        if self.config is None:  # unconfigured: the values are read at configure, the path checked now
            try:
                if changes.get("checkpoint"):
                    self.allowed_roots.check(changes["checkpoint"], "checkpoint")
            except SnapflowError as error:
                return SetParametersResult(successful=False, reason=str(error))
            return SetParametersResult(successful=True)
        candidate = replace(self.config, **{k: v for k, v in changes.items() if hasattr(self.config, k)})
        try:  # an inconsistent chunk setup (e.g. chunking blend without blend_decay) is refused whole
            executor = candidate.executor_config()
        except ConfigError as error:
            return SetParametersResult(successful=False, reason=str(error))
        refused = self.swap.request(changes, {name: getattr(self.config, name) for name in RELOAD_PARAMETERS})
        if refused is not None:
            return refused
        self.config = candidate
        self.assembler.max_age_s = self.config.max_input_age
        if "instruction" in changes:
            self.assembler.set_instruction(changes["instruction"])
        self.chunks.config = executor
        return SetParametersResult(successful=True)

    def recorded_dataset_config(self) -> BagDatasetConfig:
        """How bags recorded from this node's own input topics are read; the action of a tick is
        the next tick's joint positions (commands may be on any controller's topic)."""
        c = self.config or read_policy_node_config(self)
        return BagDatasetConfig(
            cameras={cam: self.resolve_topic_name(topic) for cam, topic in zip(c.cameras, c.camera_topics)},
            joint_names=c.joint_names, joint_state_topic=self.resolve_topic_name("joint_states"),
            instruction_topic=self.resolve_topic_name("instruction"), instruction=c.instruction,
            action_source="next_state", rate_hz=1.0 / c.action_dt, max_staleness=c.max_input_age)

    # --- services ------------------------------------------------------------------------------
    def hold_callback(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        self.held = request.data
        response.success = True
        response.message = "holding: no chunks are published" if self.held else "publishing"
        self.get_logger().info(response.message)
        return response

    # --- the worker: chunks as the executor decides ---------------------------------------------
    def _moment_complete(self) -> None:
        if self.config is not None and self.config.watermark > 0:
            self._request(Trigger.INPUTS_COMPLETE)

    def _request(self, trigger: Trigger) -> None:
        if self._worker is not None:
            self._worker.request(trigger)

    def serve(self, trigger: Trigger) -> None:
        """One wake-up of the worker: a chunk, if one is due and the inputs are valid."""
        now = self.get_clock().now().nanoseconds
        went_back = self.chunks.check_clock(now)  # (due() would forget that chunk too, silently)
        if went_back:
            self.get_logger().warning(f"clock jumped back {went_back * 1e-9:.3f} s: the chunk in force is "
                                      "forgotten, the next one starts afresh")
        if not self.active or self.held or not self.chunks.due(now, trigger):
            return
        policy, c = self.slot.policy, self.config  # one policy for the whole chunk
        try:
            arrived = self.inputs.last_arrival()
            observation = self.assembler.assemble(now)
        except HoldError as error:
            self._hold(str(error))
            return
        started = time.perf_counter()
        # rtc: the actions the chunk in force executes meanwhile, for the policy to continue
        continuation = chunk_continuation(self.chunks, policy, observation.stamp_ns)
        takes_no_prefix = c.chunking == "rtc" and policy.steps and not policy.max_delay
        if takes_no_prefix and policy.policy_id not in self._warned_no_prefix:
            self._warned_no_prefix.add(policy.policy_id)
            self.get_logger().warning(f"chunking rtc: {policy.policy_id} takes no committed prefix (distilled "
                                      "without --max-delay): its chunks start where execution is, as in plain")
        try:
            actions = policy.predict(observation, seed=self._sequence, continuation=continuation)
        except InputError as error:  # an instruction longer than the policy reads, a state it cannot take
            self._hold(str(error))
            return
        latency = time.perf_counter() - started
        actions = np.asarray(actions)
        if actions.ndim != 2 or not len(actions) or actions.shape[1] != len(c.joint_names):
            self._hold(f"policy {policy.policy_id} returned actions of shape {actions.shape}, expected "
                       f"(n >= 1, {len(c.joint_names)})")
            return
        if not np.all(np.isfinite(actions)):
            self._hold(f"policy {policy.policy_id} returned non-finite actions "
                       f"({np.count_nonzero(~np.isfinite(actions))} of {actions.size} values NaN or inf)")
            return
        if not self.active or self.held:  # hold or deactivate may have arrived during inference
            return
        arrival = self.get_clock().now().nanoseconds
        if arrival < now:  # the observation may now lie in the clock's future: not placeable in time
            self._hold(f"clock jumped back {(now - arrival) * 1e-9:.3f} s during inference: chunk dropped")
            return
        scheduled = self.chunks.accept(actions, observation.stamp_ns, arrival,
                                       policy.policy_id, committed=continuation.delay if continuation else 0)
        chunk = ActionChunk(actions=scheduled.actions.astype(np.float32), joint_names=c.joint_names,
                            dt_s=c.action_dt, policy_id=policy.policy_id, denoising_steps=policy.steps,
                            observation_stamp_ns=observation.stamp_ns, start_ns=scheduled.start_ns,
                            inference_latency_s=latency, sequence=self._sequence)
        if self.hold_reason:
            self.get_logger().info("inputs valid: publishing chunks")
            self.hold_reason = ""
        self.chunk_publisher.publish(chunk_to_msg(chunk))
        self.trajectory_publisher.publish(chunk_to_trajectory(chunk))
        published = time.perf_counter()
        self._sequence += 1
        self.counters["chunks_published"] += 1
        self.timings_ms["inference_latency"].append(latency * 1e3)
        if arrived is not None and trigger is Trigger.INPUTS_COMPLETE:  # a timer tick would add its own wait
            self.timings_ms["node_overhead"].append((published - arrived - latency) * 1e3)

    def _hold(self, reason: str) -> None:
        # Logged when the reason changes, not when only its numbers do (a stale input's age, a
        # corrupt frame's size): those would log at the chunk rate.
        if NUMBERS.sub("#", reason) != NUMBERS.sub("#", self.hold_reason):
            self.get_logger().warning(f"holding (no chunk published): {reason}")
        self.hold_reason = reason

    def publish_diagnostics(self) -> None:
        now = self.get_clock().now()
        ages = self.assembler.ages_s(now.nanoseconds) if self.config is not None else {}
        status = node_status(self.get_fully_qualified_name(), self.slot.policy, self.get_parameter("backend").value,
                             self.configure_error or self.hold_reason, self.held,
                             {name: list(values) for name, values in self.timings_ms.items()}, ages,
                             self.counters, self.swap.last_error)
        array = DiagnosticArray(status=[status])
        array.header.stamp = now.to_msg()
        self.diagnostics_publisher.publish(array)

    def destroy_node(self) -> None:
        if self.distillation is not None:
            self.distillation.shutdown()
        self._release()
        super().destroy_node()
        # rclpy's LifecycleNode leaves its state machine (transition_event publisher, a handle on the
        # rcl node) to the garbage collector: until then a ghost 'policy_node' stays in the graph.
        self._state_machine.destroy_when_not_in_use()


def main(args: list[str] | None = None) -> None:
    spin_node("policy_node", PolicyNode, args)


if __name__ == "__main__":
    main()
