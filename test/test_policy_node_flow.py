"""policy_node serving flow policies over real rclpy: raw + compressed cameras and joint states
in, chunks out; hot swap mid-stream; a corrupt swap keeps the old policy; hold; diagnostics."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import save_small_student
from snapflow_ros.files import checkpoint_id

pytestmark = pytest.mark.ros

JOINTS = ["shoulder", "elbow", "wrist"]
RATE_HZ = 10.0


def _student(directory: Path, seed: int) -> Path:
    return save_small_student(directory, seed, cameras=("front", "wrist"), state_dim=3, action_dim=3,
                              chunk_size=6, width=32, num_heads=4, num_layers=1, joint_names=tuple(JOINTS))


@pytest.fixture(scope="module")
def students(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("students")
    return {"a": _student(root / "a", 0), "b": _student(root / "b", 1)}


class Rig:
    """policy_node + fake robot (joint states, a raw and a compressed camera) + chunk recorder."""

    def __init__(self, ros, checkpoint: Path, **params) -> None:
        from rclpy.node import Node
        from rclpy.parameter import Parameter
        from snapflow_interfaces.msg import ActionChunk as ActionChunkMsg

        from snapflow_ros.ros.fake_sensors import FakeCameraPublisher, FakeJointStatePublisher
        from snapflow_ros.ros.policy_node import PolicyNode
        from snapflow_ros.ros.qos import COMMAND_QOS

        values = {"checkpoint": str(checkpoint), "joint_names": JOINTS, "cameras": ["front", "wrist"],
                  "camera_formats": ["raw", "compressed"], "instruction": "stack the blocks",
                  "chunk_rate_hz": RATE_HZ, "action_dt": 0.05, "drop_stale_actions": False,
                  # pytest's temporary root, above the students and every test's tmp_path
                  "allowed_roots": [str(Path(checkpoint).resolve().parents[1])], **params}
        self.ros = ros
        self.node = ros.node(PolicyNode, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
        self.joints = ros.node(FakeJointStatePublisher, JOINTS)
        self.front = ros.node(FakeCameraPublisher, "camera/front/image_raw", "bgr8")
        self.wrist = ros.node(FakeCameraPublisher, "camera/wrist/compressed", "jpeg")
        self.probe = ros.node(Node, "probe")
        self.chunks: list[tuple[float, object]] = []
        self.probe.create_subscription(ActionChunkMsg, "action_chunk",
                                       lambda m: self.chunks.append((time.monotonic(), m)), COMMAND_QOS)

    def wait_chunks(self, n: int, timeout_s: float = 15.0) -> bool:
        target = len(self.chunks) + n
        return self.ros.spin_until(lambda: len(self.chunks) >= target, timeout_s)


def test_chunks_from_cameras_and_joint_states(ros, students):
    from snapflow_ros.ros.conversions import msg_to_chunk

    rig = Rig(ros, students["a"])
    assert rig.wait_chunks(3)
    chunk = msg_to_chunk(rig.chunks[-1][1])
    assert chunk.joint_names == tuple(JOINTS) and chunk.actions.shape == (6, 3)
    assert chunk.policy_id == checkpoint_id(students["a"]) and chunk.denoising_steps == 1
    assert chunk.start_ns == chunk.observation_stamp_ns > 0
    assert 0 < chunk.inference_latency_s < 1.0


def test_hot_swap_mid_stream_switches_policy_without_a_gap(ros, students):
    from rclpy.parameter import Parameter

    rig = Rig(ros, students["a"])
    assert rig.wait_chunks(3)
    results = []
    swap = threading.Thread(target=lambda: results.append(
        rig.node.set_parameters([Parameter("checkpoint", value=str(students["b"]))])[0]))
    swap.start()
    new_id = checkpoint_id(students["b"])
    assert ros.spin_until(lambda: rig.chunks[-1][1].policy_id == new_id, 20.0)
    swap.join()
    assert results[0].successful
    assert rig.wait_chunks(3)
    sequences = [m.sequence for _, m in rig.chunks]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))  # none missing
    gaps = np.diff([t for t, _ in rig.chunks])
    assert gaps.max() < 2.0 / RATE_HZ, gaps  # at most one period between chunks, with jitter
    ids = [m.policy_id for _, m in rig.chunks]
    switch = ids.index(new_id)
    assert set(ids[:switch]) == {checkpoint_id(students["a"])} and set(ids[switch:]) == {new_id}


def test_swap_to_a_corrupt_checkpoint_keeps_the_old_policy(ros, students, tmp_path):
    from rclpy.parameter import Parameter

    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "config.json").write_text('{"type": "builtin"')
    rig = Rig(ros, students["a"])
    assert rig.wait_chunks(2)
    result = rig.node.set_parameters([Parameter("checkpoint", value=str(tmp_path / "corrupt"))])[0]
    assert not result.successful and "invalid JSON" in result.reason
    assert rig.node.get_parameter("checkpoint").value == str(students["a"])
    assert rig.wait_chunks(2)
    assert rig.chunks[-1][1].policy_id == checkpoint_id(students["a"])
    assert rig.node.counters["swap_failures"] == 1


def test_swap_failing_during_load_reverts_the_parameter(ros, students, tmp_path):
    import shutil

    from rclpy.parameter import Parameter

    broken = tmp_path / "broken"
    shutil.copytree(students["b"], broken)
    weights = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(weights[: len(weights) // 3])  # passes the quick checks
    rig = Rig(ros, students["a"])
    assert rig.wait_chunks(2)
    result = rig.node.set_parameters([Parameter("checkpoint", value=str(broken))])[0]
    assert result.successful  # accepted; loading runs beside the serving policy
    assert ros.spin_until(lambda: rig.node.counters["swap_failures"] == 1, 20.0)
    assert ros.spin_until(lambda: rig.node.get_parameter("checkpoint").value == str(students["a"]), 5.0)
    assert "model.safetensors: unreadable" in rig.node.swap.last_error
    assert rig.wait_chunks(2)
    assert {m.policy_id for _, m in rig.chunks} == {checkpoint_id(students["a"])}


def test_watermark_requests_a_chunk_when_half_of_the_previous_one_ran(ros, students):
    # 6 actions x 0.05 s = 0.3 s per chunk; watermark 0.5 -> a new chunk about every 0.15 s: the
    # joint states (50 Hz) trigger the check, not only the 1 Hz timer.
    rig = Rig(ros, students["a"], watermark=0.5, chunk_rate_hz=1.0)
    assert rig.wait_chunks(8)
    gaps = np.diff([time_ for time_, _ in rig.chunks[2:]])
    assert 0.12 < float(np.median(gaps)) < 0.25, gaps


def test_hold_stops_output_within_one_period(ros, students):
    from std_srvs.srv import SetBool

    rig = Rig(ros, students["a"])
    assert rig.wait_chunks(2)
    client = rig.probe.create_client(SetBool, "/policy_node/hold")
    assert client.wait_for_service(timeout_sec=5.0)
    future = client.call_async(SetBool.Request(data=True))
    assert ros.spin_until(future.done, 5.0) and future.result().success
    ros.spin_for(1.0 / RATE_HZ)  # a chunk already computing may still land in this period
    count = len(rig.chunks)
    ros.spin_for(5.0 / RATE_HZ)
    assert len(rig.chunks) == count
    future = client.call_async(SetBool.Request(data=False))
    assert ros.spin_until(future.done, 5.0)
    assert rig.wait_chunks(1)


@pytest.mark.parametrize("fault", ["stale_camera", "nan_joint"])
def test_stale_or_nan_inputs_publish_nothing_and_say_why(ros, students, fault):
    from diagnostic_msgs.msg import DiagnosticArray

    rig = Rig(ros, students["a"])
    statuses = []
    rig.probe.create_subscription(DiagnosticArray, "/diagnostics", lambda m: statuses.extend(m.status), 10)
    assert rig.wait_chunks(1)
    if fault == "stale_camera":
        rig.wrist.stamp_offset_ns = 3_000_000_000  # older than max_input_age (0.5 s)
        reason = "camera:wrist is stale"
    else:
        rig.joints.inject_nan = True
        reason = "non-finite"
    ros.spin_for(2.0 / RATE_HZ)
    count = len(rig.chunks)
    ros.spin_for(5.0 / RATE_HZ)
    assert len(rig.chunks) == count
    assert reason in rig.node.hold_reason
    assert ros.spin_until(lambda: any(reason in s.message for s in statuses), 3.0)
    status = next(s for s in reversed(statuses) if reason in s.message)
    values = {kv.key: kv.value for kv in status.values}
    assert values["policy_id"] == checkpoint_id(students["a"]) and "input_age_s.camera:wrist" in values


@pytest.mark.slow
def test_bench_node_reports_overhead_and_memory(students, tmp_path):
    import json
    import subprocess
    import sys

    report_path = tmp_path / "node.json"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "snapflow"), "bench-node", str(students["a"]), "--joint-names", *JOINTS,
         "--cameras", "front", "wrist", "--seconds", "4", "--json", str(report_path)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["chunks"] > 0 and report["chunks_missing_by_sequence"] == 0
    assert report["frames_published_per_second"] > 20
    for name in ("node_overhead", "observation_to_chunk_received", "inference"):
        assert {"p50", "p95", "p99"} <= set(report["latency_ms"][name])
    received_p50 = report["latency_ms"]["observation_to_chunk_received"]["p50"]
    assert 0 < report["latency_ms"]["node_overhead"]["p50"] < received_p50
    assert report["node_rss_mb"]["end"] > 0
