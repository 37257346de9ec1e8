"""Hot swap of the served policy through the node's parameters (checkpoint, backend,
denoising_steps), safely: cheap checks answer the parameter request itself; loading, warm-up and
checks run on a loader thread beside the serving policy; a failure keeps the old policy serving
and sets the parameters back to what serves."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

from snapflow_ros.allowed_roots import AllowedRoots
from snapflow_ros.errors import ConfigError, SnapflowError
from snapflow_ros.export.manifest import Manifest
from snapflow_ros.files import CONFIG, read_config
from snapflow_ros.policy import HoldPositionPolicy
from snapflow_ros.ros.parameters import PolicyNodeConfig
from snapflow_ros.runtime.serving import PolicySlot, check_policy_source, load_served_policy

RELOAD_PARAMETERS = ("checkpoint", "backend", "denoising_steps")


def load_for_node(config: PolicyNodeConfig, checkpoint: str, backend: str, steps: int):
    """The policy a node of `config` can serve: warmed up, checked, with its joints and cameras."""
    if not checkpoint:
        return HoldPositionPolicy(len(config.joint_names), config.action_horizon)
    policy = load_served_policy(Path(checkpoint), backend, config.device, steps)
    if policy.action_dim != len(config.joint_names):
        raise ConfigError(f"{checkpoint}: policy has {policy.action_dim} action dims, joint_names "
                          f"lists {len(config.joint_names)}")
    trained = recorded_joint_names(Path(checkpoint), backend)
    if trained and trained != tuple(config.joint_names):  # same count, other joints or another order
        raise ConfigError(f"{checkpoint}: policy was trained for joints {list(trained)}, this node's "
                          f"joint_names are {list(config.joint_names)}")
    missing = [cam for cam in policy.cameras if cam not in config.cameras]
    if missing:
        raise ConfigError(f"{checkpoint}: policy needs cameras {missing}, not in 'cameras' {list(config.cameras)}")
    return policy


def recorded_joint_names(source: Path, backend: str) -> tuple[str, ...]:
    """The joint names a checkpoint (an export: its processor) records for its action dims, in
    order; () where it records none (then only their number is checked)."""
    directory = source / Manifest.read(source).processor if backend == "onnxruntime" else source
    if not (directory / CONFIG).is_file():
        return ()
    return tuple(read_config(directory).get("joint_names") or ())


class HotSwap:
    def __init__(self, node: Node, slot: PolicySlot, load: Callable[[str, str, int], object],
                 counters: dict[str, int], allowed_roots: AllowedRoots) -> None:
        self.node, self.slot, self.load, self.counters = node, slot, load, counters
        self.allowed_roots = allowed_roots
        self.serving_source: dict = {}
        self.last_error = ""
        self._reverting = False
        self._pending: dict | None = None
        self._lock = threading.Lock()  # held while a policy loads: one load at a time
        self.generation = 0  # bumped when the node releases its policy: a load finishing later is dropped

    def request(self, changes: dict, current: dict) -> SetParametersResult | None:
        """From the on-set-parameters callback: None accepts (a swap follows once the change is
        committed), a result refuses the request with the reason."""
        if self._reverting or not any(name in changes for name in RELOAD_PARAMETERS):
            return None  # (our own revert after a failed swap has nothing to load)
        if self._lock.locked():  # one load at a time: a second would race the first's revert
            return self.failed("a policy is still loading; set the parameter again once it is swapped in or refused")
        target = {name: changes.get(name, current[name]) for name in RELOAD_PARAMETERS}
        try:
            if target["checkpoint"]:  # loaded from where it resolved to when checked
                target["resolved"] = str(self.allowed_roots.check(target["checkpoint"], "checkpoint"))
            check_policy_source(target.get("resolved", ""), target["backend"])
        except SnapflowError as error:
            return self.failed(str(error))
        self._pending = target
        return None

    def committed(self, parameters) -> None:
        """Post-set-parameters callback: the accepted change loads beside the serving policy."""
        target, self._pending = self._pending, None
        if target is not None:
            self._lock.acquire()  # held from here, so a request arriving before the loader runs is refused too
            threading.Thread(target=self._swap, args=(target,), name="policy_loader", daemon=True).start()

    def _swap(self, target: dict) -> None:
        """The loader thread; it owns the lock `committed` took and releases it when done."""
        serving, generation = self.slot.policy, self.generation
        try:
            try:
                policy = self.load(target.get("resolved", ""), target["backend"], target["denoising_steps"])
            except Exception as error:  # noqa: BLE001 - whatever failed, the old policy keeps serving
                self.failed(str(error) if isinstance(error, (SnapflowError, OSError))
                            else f"{type(error).__name__}: {error}")
                # Report the failure where it was asked for: the parameters go back to what serves.
                self._reverting = True
                try:
                    self.node.set_parameters([Parameter(name, value=self.serving_source[name])
                                              for name in RELOAD_PARAMETERS])
                finally:
                    self._reverting = False
                return
            if generation != self.generation:  # cleaned up meanwhile: nothing may serve now
                return
            self.slot.swap(policy)  # between chunks: the worker takes one reference per chunk
            self.serving_source = {name: target[name] for name in RELOAD_PARAMETERS}
            self.counters["swaps"] += 1
            self.node.get_logger().info(f"swapped {serving.policy_id} -> {policy.policy_id}")
        finally:
            self._lock.release()

    def failed(self, reason: str) -> SetParametersResult:
        self.counters["swap_failures"] += 1
        self.last_error = reason
        serving = self.slot.policy
        self.node.get_logger().error(f"policy swap failed, still serving "
                                     f"{serving.policy_id if serving else 'nothing'}: {reason}")
        return SetParametersResult(successful=False, reason=reason)

    def to_student(self, student: str, backend: str) -> str:
        """A finished distillation job's student goes through the same checked hot swap."""
        if self.slot.policy is None:
            return "not swapped: the node is not configured (no policy serves)"
        if backend != "torch":
            return (f"not swapped: this node serves the {backend} backend; export the student "
                    f"and set 'checkpoint' to the export")
        result = self.node.set_parameters([Parameter("checkpoint", value=student)])[0]
        if not result.successful:
            return f"swap refused: {result.reason}"
        return "swap requested: loading beside the serving policy"
