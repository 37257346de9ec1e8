"""policy_node: joint states in, stamped action chunks out (ActionChunk + JointTrajectory).

Subscribes:  joint_states (sensor_msgs/JointState)
Publishes:   action_chunk (snapflow_interfaces/ActionChunk)
             joint_trajectory (trajectory_msgs/JointTrajectory, for joint_trajectory_controller)
Topic names are relative: remap them or push the node into a namespace.
"""

from __future__ import annotations

import time

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import JointState
from snapflow_interfaces.msg import ActionChunk as ActionChunkMsg
from trajectory_msgs.msg import JointTrajectory

from snapflow_ros.errors import ConfigError, InputError
from snapflow_ros.policy import ActionChunk, HoldPositionPolicy, Observation
from snapflow_ros.ros.conversions import (
    chunk_to_msg,
    chunk_to_trajectory,
    joint_positions,
    time_to_ns,
)
from snapflow_ros.ros.parameters import (
    POLICY_NODE_PARAMETERS,
    declare_parameters,
    read_policy_node_config,
)
from snapflow_ros.ros.qos import COMMAND_QOS, SENSOR_QOS


class PolicyNode(Node):
    """Publishes one action chunk per period from the newest fresh, valid joint state."""

    def __init__(self, **kwargs) -> None:
        super().__init__("policy_node", **kwargs)
        try:
            self._configure()
        except Exception:
            self.destroy_node()  # a node that failed to configure must not linger in the graph
            raise

    def _configure(self) -> None:
        declare_parameters(self, POLICY_NODE_PARAMETERS)
        self.config = read_policy_node_config(self)
        if self.config.checkpoint:
            raise ConfigError(
                f"checkpoint '{self.config.checkpoint}': this version serves only the built-in "
                "hold-position policy; leave 'checkpoint' empty"
            )
        self.policy = HoldPositionPolicy(len(self.config.joint_names), self.config.action_horizon)
        self.hold_reason = "waiting for joint_states"
        self._latest_joint_state: JointState | None = None
        self._sequence = 0

        self.create_subscription(JointState, "joint_states", self.joint_state_callback, SENSOR_QOS)
        self.chunk_publisher = self.create_publisher(ActionChunkMsg, "action_chunk", COMMAND_QOS)
        self.trajectory_publisher = self.create_publisher(
            JointTrajectory, "joint_trajectory", COMMAND_QOS
        )
        self.create_timer(1.0 / self.config.chunk_rate_hz, self.chunk_timer_callback)
        self.get_logger().info(
            f"serving {self.policy.policy_id} for joints {list(self.config.joint_names)} "
            f"at {self.config.chunk_rate_hz:g} Hz"
        )

    def joint_state_callback(self, msg: JointState) -> None:
        self._latest_joint_state = msg  # callbacks only store; the timer does the work

    def chunk_timer_callback(self) -> None:
        try:
            observation = self._observation()
        except InputError as error:
            self._hold(str(error))
            return
        started = time.perf_counter()
        actions = self.policy.predict(observation)
        latency = time.perf_counter() - started
        chunk = ActionChunk(
            actions=actions,
            joint_names=self.config.joint_names,
            dt_s=self.config.action_dt,
            policy_id=self.policy.policy_id,
            denoising_steps=self.policy.denoising_steps,
            observation_stamp_ns=observation.stamp_ns,
            start_ns=self.get_clock().now().nanoseconds,
            inference_latency_s=latency,
            sequence=self._sequence,
        )
        self.chunk_publisher.publish(chunk_to_msg(chunk))
        self.trajectory_publisher.publish(chunk_to_trajectory(chunk))
        self._sequence += 1
        if self.hold_reason:
            self.get_logger().info("inputs valid: publishing chunks")
            self.hold_reason = ""

    def _observation(self) -> Observation:
        msg = self._latest_joint_state
        if msg is None:
            raise InputError("no message on joint_states yet")
        stamp_ns = time_to_ns(msg.header.stamp)
        age = (self.get_clock().now().nanoseconds - stamp_ns) * 1e-9
        if age > self.config.max_input_age:
            raise InputError(
                f"joint_states is stale: stamp is {age:.3f} s old "
                f"(max_input_age {self.config.max_input_age:g} s)"
            )
        return Observation(state=joint_positions(msg, self.config.joint_names), stamp_ns=stamp_ns)

    def _hold(self, reason: str) -> None:
        if reason != self.hold_reason:
            self.get_logger().warning(f"holding (no chunk published): {reason}")
        self.hold_reason = reason


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = None
    try:
        node = PolicyNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ConfigError as error:
        # A bad configuration is the user's to fix: say what, without a traceback.
        print(f"policy_node: configuration error: {error}", flush=True)
        raise SystemExit(2) from None
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
