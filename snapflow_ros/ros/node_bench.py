"""`snapflow bench-node`: what the node adds on top of inference, and whether it keeps up.

policy_node in its own process serving a checkpoint, event-driven (a watermark: a chunk starts
when the inputs of one moment are in); in this process, on an isolated localhost domain, three
fake cameras at 30 Hz, joint states at 100 Hz and a listener. The node's overhead is its own
measurement, reported in /diagnostics: from the arrival at the node of the last input of an
observation to the chunk's publication, minus that chunk's inference. Beside it, from here:
observation stamp -> chunk received, chunks per second, missing sequence numbers and the node
process's RSS sampled from start to end.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from snapflow_interfaces.msg import ActionChunk as ActionChunkMsg

from snapflow_ros.errors import NodeError
from snapflow_ros.ros.conversions import duration_to_seconds, time_to_ns
from snapflow_ros.ros.fake_sensors import FakeCameraPublisher, FakeJointStatePublisher
from snapflow_ros.ros.isolation import isolated_ros_env
from snapflow_ros.ros.qos import COMMAND_QOS
from snapflow_ros.runtime.timing import percentiles


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def bench_node(checkpoint: Path, joint_names: list[str], cameras: list[str], seconds: float,
               chunk_rate_hz: float, camera_hz: float = 30.0, image_size: int = 96, watermark: float = 0.5,
               action_dt: float = 1 / 30) -> dict:
    import subprocess
    import sys
    import tempfile

    import yaml
    from rclpy.executors import SingleThreadedExecutor

    os.environ.update(isolated_ros_env())
    params = {"checkpoint": str(checkpoint), "joint_names": joint_names, "cameras": cameras,
              "instruction": "stack the blocks", "chunk_rate_hz": chunk_rate_hz, "drop_stale_actions": False,
              "watermark": watermark, "action_dt": action_dt}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as params_file:
        yaml.safe_dump({"/**": {"ros__parameters": params}}, params_file)
    # The node in its own process, as on a robot; sensors and listener here.
    node_process = subprocess.Popen([sys.executable, "-m", "snapflow_ros.ros.policy_node", "--ros-args",
                                     "--params-file", params_file.name, "--log-level", "warn"])
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    nodes: list[Node] = [FakeJointStatePublisher(joint_names, rate_hz=100.0, context=context)]
    nodes += [FakeCameraPublisher(f"camera/{c}/image_raw", "rgb8", camera_hz, image_size, context=context)
              for c in cameras]
    listener = Node("bench_listener", context=context)
    nodes.append(listener)
    received: list[tuple[int, ActionChunkMsg]] = []
    listener.create_subscription(
        ActionChunkMsg, "action_chunk",
        lambda m: received.append((listener.get_clock().now().nanoseconds, m)), COMMAND_QOS)
    diagnostics: list[dict[str, str]] = []  # the node's own status, once a second
    listener.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diagnostics.extend(
        {kv.key: kv.value for kv in s.values} for s in m.status if s.name.endswith("policy_node")), 10)
    for n in nodes:
        executor.add_node(n)

    def spin_for(duration: float) -> None:
        end = time.monotonic() + duration
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.01)

    try:
        deadline = time.monotonic() + 60.0  # model loading and discovery
        while not received and time.monotonic() < deadline and node_process.poll() is None:
            spin_for(0.2)
            unconfigured = [d.get("hold_reason", "") for d in diagnostics if "policy_id" in d and not d["policy_id"]]
            if unconfigured and unconfigured[-1]:  # the lifecycle node stayed unconfigured: say why now
                raise NodeError(f"policy_node could not configure: {unconfigured[-1]}")
        if not received:
            raise NodeError(f"policy_node published nothing (exit code {node_process.poll()})")
        start_count, start_rss = len(received), _rss_mb(node_process.pid)
        frames_start = sum(c.frames for c in nodes[1:-1])
        samples = []
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            spin_for(min(1.0, seconds / 10))
            samples.append(_rss_mb(node_process.pid))
        elapsed = time.monotonic() - started
        frames = sum(c.frames for c in nodes[1:-1]) - frames_start
        window = received[start_count:]
    finally:
        node_process.terminate()
        node_process.wait(timeout=10)
        executor.shutdown()
        for n in nodes:
            n.destroy_node()
        context.try_shutdown()
        os.unlink(params_file.name)
    end_to_end = [(arrival - time_to_ns(m.observation_stamp)) * 1e-6 for arrival, m in window]
    inference = [duration_to_seconds(m.inference_latency) * 1e3 for _, m in window]
    overhead = [e - i for e, i in zip(end_to_end, inference)]
    status = diagnostics[-1] if diagnostics else {}
    node_overhead = {f"p{q}": float(status[f"node_overhead_p{q}_ms"]) for q in (50, 95, 99)
                     if f"node_overhead_p{q}_ms" in status}
    sequences = [m.sequence for _, m in window]
    return {
        "checkpoint": str(checkpoint), "cameras": len(cameras), "camera_hz": camera_hz,
        "image_size": image_size, "chunk_rate_hz": chunk_rate_hz, "seconds": elapsed,
        "chunks": len(window), "chunks_per_second": len(window) / elapsed,
        "chunks_missing_by_sequence": (sequences[-1] - sequences[0] + 1 - len(sequences)) if sequences else 0,
        "frames_published_per_second": frames / elapsed,
        "watermark": watermark, "action_dt": action_dt,
        "latency_ms": {"node_overhead": node_overhead, "observation_to_chunk_received": percentiles(end_to_end),
                       "inference": percentiles(inference), "stamp_to_received_minus_inference": percentiles(overhead)},
        "node_overhead_chunks": min(int(status.get("chunks_published", 0)), 2000),
        "node_rss_mb": {"start": start_rss, "end": samples[-1] if samples else start_rss,
                        "max": max(samples, default=start_rss)},
        "note": "node_overhead: measured in the node (its /diagnostics at the end, over its last "
                "node_overhead_chunks chunks, start-up included): arrival of the observation's last input -> "
                "chunk published, minus that chunk's inference. stamp_to_received_minus_inference: observation "
                "stamp -> chunk received here, minus inference; it adds the age of the newest frame and transport",
    }
