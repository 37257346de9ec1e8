"""The node-process fault matrix: policy_node in its own process (as on a robot, started from a
parameter file), fake sensors and a listener here. A SIGKILLed node leaves no distillation job
running and, restarted from the same file, serves again; Ctrl-C while a job runs ends node and job
within a second, without a traceback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from snapflow_ros.bags.demo_bags import JOINTS
from snapflow_ros.data.synthetic_reach import INSTRUCTION
from snapflow_ros.files import LOCK, lock_holder

pytestmark = [pytest.mark.ros, pytest.mark.slow]


class NodeProcess:
    """`python -m snapflow_ros.ros.policy_node --ros-args --params-file F`; its stderr in a file."""

    def __init__(self, params_file: Path, log: Path) -> None:
        self.log = log
        with log.open("a") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "snapflow_ros.ros.policy_node", "--ros-args", "--params-file",
                 str(params_file)], stdout=subprocess.DEVNULL, stderr=stderr)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class Listener:
    """Fake camera and joint states for the node, its chunks and its jobs' statuses, and its services."""

    def __init__(self, ros) -> None:
        from rclpy.node import Node
        from snapflow_interfaces.msg import ActionChunk, DistillationStatus

        from snapflow_ros.ros.distillation import STATUS_QOS
        from snapflow_ros.ros.fake_sensors import FakeCameraPublisher, FakeJointStatePublisher
        from snapflow_ros.ros.qos import COMMAND_QOS

        self.ros = ros
        ros.node(FakeJointStatePublisher, list(JOINTS))
        ros.node(FakeCameraPublisher, "camera/front/image_raw")
        self.probe = ros.node(Node, "probe")
        self.chunks: list = []
        self.statuses: list = []
        self.probe.create_subscription(ActionChunk, "action_chunk", self.chunks.append, COMMAND_QOS)
        self.probe.create_subscription(DistillationStatus, "/policy_node/distillation_status",
                                       self.statuses.append, STATUS_QOS)

    def start_job(self, recorded: dict, output: Path, **fields) -> str:
        from snapflow_interfaces.msg import DistillationJob
        from snapflow_interfaces.srv import StartDistillation

        values = dict(bag_paths=recorded["bags"], teacher_checkpoint=recorded["teacher"], output_dir=str(output),
                      dataset_config=recorded["config"], steps=100_000) | fields
        client = self.probe.create_client(StartDistillation, "/policy_node/start_distillation")
        assert client.wait_for_service(timeout_sec=30.0)
        future = client.call_async(StartDistillation.Request(job=DistillationJob(**values)))
        assert self.ros.spin_until(future.done, 30.0)
        assert future.result().accepted, future.result().message
        return future.result().job_id

    def progress(self, job_id: str) -> int:
        return max((s.step for s in self.statuses if s.job_id == job_id), default=0)


def _params(tmp_path: Path, recorded: dict, tmp_root: str) -> Path:
    params = {"checkpoint": recorded["teacher"], "joint_names": list(JOINTS), "cameras": ["front"],
              "instruction": INSTRUCTION, "chunk_rate_hz": 10.0, "drop_stale_actions": False,
              "allowed_roots": [tmp_root], "distillation_threads": 1}
    path = tmp_path / "policy_node.yaml"
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    return path


def _job_pid(output: Path) -> int:
    """The job's process, as its output lock records it (held: the job is running)."""
    assert lock_holder(output) is not None
    return json.loads((output / LOCK).read_text())["pid"]


def _group_alive(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group: a job and anything it started."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def _serving(ros, listener: Listener, node: NodeProcess, chunks: int = 3, timeout_s: float = 90.0) -> bool:
    count = len(listener.chunks)
    return ros.spin_until(lambda: len(listener.chunks) >= count + chunks or node.process.poll() is not None,
                          timeout_s) and node.process.poll() is None


def test_sigkilled_node_leaves_no_job_running_and_restarted_from_its_file_serves_again(
        ros, recorded, tmp_path, tmp_root):
    params = _params(tmp_path, recorded, tmp_root)
    listener = Listener(ros)
    node = NodeProcess(params, tmp_path / "node.log")
    try:
        assert _serving(ros, listener, node), (tmp_path / "node.log").read_text()[-3000:]
        output = tmp_path / "job"
        # Large batches: progress lines (every 50 steps) seconds apart, so it is the watch of its
        # parent that ends the job, not a write to the dead node's pipe.
        job_id = listener.start_job(recorded, output, batch_size=128)
        assert ros.spin_until(lambda: listener.progress(job_id) > 0, 120.0)
        pid = _job_pid(output)
        assert _group_alive(pid)
        node.process.kill()  # SIGKILL: the node cannot cancel its job
        killed = time.monotonic()
        node.process.wait(10)
        while _group_alive(pid) and time.monotonic() - killed < 5.0:
            time.sleep(0.05)
        gone_after = time.monotonic() - killed
        assert not _group_alive(pid), "the job outlived its SIGKILLed node"
        assert gone_after < 2.0, gone_after
        assert "parent process" in (output / "job.log").read_text()  # it noticed, and stopped as if cancelled
        assert not (output / "policy").exists() and lock_holder(output) is None

        # Restarted from the same parameter file: serving again.
        node = NodeProcess(params, tmp_path / "node.log")
        assert _serving(ros, listener, node), (tmp_path / "node.log").read_text()[-3000:]
    finally:
        node.stop()


def test_ctrl_c_ends_the_node_and_its_running_job_within_a_second(ros, recorded, tmp_path, tmp_root):
    params = _params(tmp_path, recorded, tmp_root)
    listener = Listener(ros)
    log = tmp_path / "node.log"
    node = NodeProcess(params, log)
    try:
        assert _serving(ros, listener, node), log.read_text()[-3000:]
        output = tmp_path / "job"
        job_id = listener.start_job(recorded, output, batch_size=4)
        assert ros.spin_until(lambda: listener.progress(job_id) > 0, 120.0)
        pid = _job_pid(output)
        node.process.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        code = node.process.wait(10)
        took = time.monotonic() - interrupted
    finally:
        node.stop()
    assert code == 0, log.read_text()[-3000:]
    # Within a second, with half of it to spare for a loaded machine: the teardown (job cancelled,
    # node destroyed, rclpy shut down) takes well under 0.1 s; a job left to its SIGTERM grace or
    # the interpreter's finalisation with torch loaded would each take about half a second.
    assert took < 0.5, took
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    assert not _group_alive(pid), "the job outlived its node"
    assert not (output / "policy").exists()
    assert [p.name for p in output.rglob("*") if ".tmp-" in p.name] == []
