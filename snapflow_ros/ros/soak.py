"""`snapflow soak`: the policy node left running, as on a robot overnight, with everything that
happens to one at the same time.

policy_node in its own process (from a parameter file, as `ros2 run` starts it) serves a built-in
one-step student; in this process, on an isolated localhost domain: three cameras at 30 Hz and
joint states at 100 Hz, a hot swap every --swap-every seconds alternating two students, a
distillation job from bags every --job-every seconds, the hold service toggled, and a listener.
Recorded: every chunk (arrival, inference latency, observation stamp -> received), hold windows,
the node process's RSS and open file descriptors once a second, swaps (until a chunk of the new
policy arrives), jobs (to their final state) and errors (the node's ERROR logs, refusals, a
dead node), kept in WORKDIR/record.json. runtime/soak_report.py summarises them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from snapflow_ros.errors import NodeError
from snapflow_ros.ros.conversions import duration_to_seconds, time_to_ns
from snapflow_ros.ros.isolation import isolated_ros_env
from snapflow_ros.runtime.soak_report import SoakRecord, summarise

JOINTS = ("j1", "j2", "j3", "j4", "j5", "j6", "gripper")
NODE = "/policy_node"
JOB_STATES = ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")


@dataclass(frozen=True)
class SoakConfig:
    workdir: Path
    minutes: float = 60.0
    swap_every_s: float = 30.0
    job_every_s: float = 300.0
    first_job_s: float = 20.0
    hold_every_s: float = 60.0
    hold_for_s: float = 3.0
    job_steps: int = 200
    cameras: tuple[str, ...] = ("front", "left", "right")
    camera_hz: float = 30.0
    joint_state_hz: float = 100.0
    image_size: int = 96
    chunk_rate_hz: float = 10.0
    warmup_minutes: float = 5.0  # RSS and fds settle (allocator, caches) before their slope counts


def _process_sample(pid: int) -> tuple[float, int]:
    with open(f"/proc/{pid}/statm") as statm:
        rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def prepare(config: SoakConfig) -> dict:
    """Two one-step students for the node and, for the jobs, demo bags, their dataset YAML and a
    teacher (untrained: a job's cost and files do not depend on what it learns)."""
    import torch

    from snapflow_ros.bags.dataset import load_bag_dataset
    from snapflow_ros.bags.demo_bags import DemoBagSpec, write_demo_bags
    from snapflow_ros.families.builtin import BuiltinVLA, BuiltinVLAConfig
    from snapflow_ros.files import checkpoint_id, save_policy

    work = config.workdir
    students = {}
    for seed, name in enumerate(("student_a", "student_b")):
        if not (work / name / "config.json").is_file():
            torch.manual_seed(seed)
            policy = BuiltinVLA(BuiltinVLAConfig(cameras=config.cameras, state_dim=len(JOINTS),
                                                 action_dim=len(JOINTS), chunk_size=10, joint_names=JOINTS))
            with torch.no_grad():
                policy.target_time.linear_out.weight.normal_(0, 0.1)
            save_policy(policy, work / name)
        students[name] = {"path": str(work / name), "id": checkpoint_id(work / name)}
    spec = DemoBagSpec(episodes=3)
    bags = sorted((work / "bags").glob("demo_*")) or write_demo_bags(work / "bags", 1, spec)
    dataset = work / "bag_dataset.yaml"
    spec.dataset_config().write_yaml(dataset)
    teacher = work / "teacher"
    if not (teacher / "config.json").is_file():
        data = load_bag_dataset(bags, spec.dataset_config(), chunk_size=6)
        torch.manual_seed(0)
        policy = BuiltinVLA(BuiltinVLAConfig(cameras=data.cameras, state_dim=len(data.joint_names),
                                             action_dim=len(data.action_names), chunk_size=6, width=32,
                                             num_heads=4, num_layers=1, joint_names=data.action_names))
        policy.state_normalizer.fit(data.states)
        policy.action_normalizer.fit(data.actions[data.action_masks])
        save_policy(policy, teacher)
    return {"students": students, "bags": [str(b) for b in bags], "dataset": str(dataset), "teacher": str(teacher)}


class SoakClient:
    """This process's side: fake sensors, a listener, and the clients that swap, hold and start jobs."""

    def __init__(self, config: SoakConfig, context) -> None:
        from rcl_interfaces.msg import Log
        from rcl_interfaces.srv import SetParameters
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from snapflow_interfaces.msg import ActionChunk, DistillationStatus
        from snapflow_interfaces.srv import StartDistillation
        from std_srvs.srv import SetBool

        from snapflow_ros.ros.distillation import STATUS_QOS
        from snapflow_ros.ros.fake_sensors import FakeCameraPublisher, FakeJointStatePublisher
        from snapflow_ros.ros.qos import COMMAND_QOS

        self.executor = SingleThreadedExecutor(context=context)
        self.nodes = [FakeJointStatePublisher(JOINTS, rate_hz=config.joint_state_hz, context=context)]
        self.nodes += [FakeCameraPublisher(f"camera/{c}/image_raw", "rgb8", config.camera_hz, config.image_size,
                                           context=context) for c in config.cameras]
        self.node = Node("soak_client", context=context)
        self.nodes.append(self.node)
        for n in self.nodes:
            self.executor.add_node(n)
        self.chunks: list = []      # (monotonic, policy id, inference ms, stamp -> received ms)
        self.statuses: dict[str, str] = {}
        self.node_errors: list[str] = []
        self.node.create_subscription(ActionChunk, "action_chunk", self._chunk, COMMAND_QOS)
        self.node.create_subscription(DistillationStatus, f"{NODE}/distillation_status",
                                      lambda m: self.statuses.__setitem__(m.job_id, JOB_STATES[m.state]), STATUS_QOS)
        self.node.create_subscription(Log, "/rosout", self._log, 100)
        self.set_parameters = self.node.create_client(SetParameters, f"{NODE}/set_parameters")
        self.hold = self.node.create_client(SetBool, f"{NODE}/hold")
        self.start_job = self.node.create_client(StartDistillation, f"{NODE}/start_distillation")

    def _chunk(self, msg) -> None:
        received = self.node.get_clock().now().nanoseconds
        self.chunks.append((time.monotonic(), msg.policy_id, duration_to_seconds(msg.inference_latency) * 1e3,
                            (received - time_to_ns(msg.observation_stamp)) * 1e-6))

    def _log(self, msg) -> None:
        if msg.name.endswith("policy_node") and msg.level >= 40:  # ERROR, FATAL
            self.node_errors.append(msg.msg)

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=min(0.01, max(end - time.monotonic(), 0.0)))

    def call(self, client, request, timeout_s: float = 10.0):
        """The response, spinning meanwhile (sensors keep publishing); None on timeout."""
        future = client.call_async(request)
        end = time.monotonic() + timeout_s
        while not future.done() and time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.01)
        return future.result() if future.done() else None

    def close(self) -> None:
        self.executor.shutdown()
        for n in self.nodes:
            n.destroy_node()


def run_soak(config: SoakConfig) -> dict:
    import rclpy
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter
    from snapflow_interfaces.msg import DistillationJob
    from snapflow_interfaces.srv import StartDistillation
    from std_srvs.srv import SetBool

    config.workdir.mkdir(parents=True, exist_ok=True)
    material = prepare(config)
    students = list(material["students"].values())
    os.environ.update(isolated_ros_env())
    params = config.workdir / "policy_node.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "checkpoint": students[0]["path"], "joint_names": list(JOINTS), "cameras": list(config.cameras),
        "instruction": "stack the blocks", "chunk_rate_hz": config.chunk_rate_hz, "watermark": 0.0,
        "action_dt": 0.1, "drop_stale_actions": False, "allowed_roots": [str(config.workdir.resolve())],
        "distillation_threads": 1}}}))
    with (config.workdir / "node.log").open("w") as log:
        node_process = subprocess.Popen([sys.executable, "-m", "snapflow_ros.ros.policy_node", "--ros-args",
                                         "--params-file", str(params)], stderr=log)
    context = rclpy.Context()
    rclpy.init(context=context)
    client = SoakClient(config, context)
    duration = config.minutes * 60.0
    record = SoakRecord(duration_s=duration, chunk_rate_hz=config.chunk_rate_hz,
                        warmup_s=min(config.warmup_minutes * 60.0, duration / 2))
    try:
        deadline = time.monotonic() + 120.0  # loading, warm-up, discovery
        while not client.chunks and time.monotonic() < deadline and node_process.poll() is None:
            client.spin_for(0.2)
        if not client.chunks:
            raise NodeError(f"policy_node published nothing (exit code {node_process.poll()}; see "
                            f"{config.workdir / 'node.log'})")
        start = time.monotonic()
        first_chunk = len(client.chunks)
        next_swap, next_job, next_sample = config.swap_every_s, config.first_job_s, 0.0
        next_hold = config.hold_every_s * 2 / 3
        swap_target, pending_swap, hold_on = 1, None, None
        jobs: list[dict] = []
        while (now := time.monotonic() - start) < duration:
            if node_process.poll() is not None:
                record.errors.append(f"policy_node exited with code {node_process.returncode} at {now:.0f} s")
                break
            if now >= next_sample:
                record.process.append((now, *_process_sample(node_process.pid)))
                record.load.append((now, os.getloadavg()[0]))
                next_sample += 1.0
            if pending_swap and any(c[1] == pending_swap["id"] for c in client.chunks[pending_swap["index"]:]):
                pending_swap["record"]["completed_after_s"] = now - pending_swap["record"]["at_s"]
                pending_swap = None
            if now >= next_swap:
                next_swap += config.swap_every_s
                target = students[swap_target]
                entry = {"at_s": now, "to": target["id"], "completed_after_s": None}
                record.swaps.append(entry)
                if pending_swap:
                    record.errors.append(f"swap at {pending_swap['record']['at_s']:.0f} s not completed within "
                                         f"{config.swap_every_s:g} s")
                response = client.call(client.set_parameters, SetParameters.Request(parameters=[
                    Parameter("checkpoint", value=target["path"]).to_parameter_msg()]))
                result = response.results[0] if response else None
                if result is None or not result.successful:
                    entry["refused"] = result.reason if result else "no answer"
                    record.errors.append(f"swap at {now:.0f} s refused: {entry['refused']}")
                else:
                    pending_swap = {"id": target["id"], "index": len(client.chunks), "record": entry}
                    swap_target = 1 - swap_target
            if now >= next_job:
                next_job += config.job_every_s
                output = config.workdir / "jobs" / f"job_{len(jobs):03d}"
                job = DistillationJob(bag_paths=material["bags"], teacher_checkpoint=material["teacher"],
                                      output_dir=str(output), dataset_config=material["dataset"],
                                      steps=config.job_steps, batch_size=8)
                response = client.call(client.start_job, StartDistillation.Request(job=job))
                entry = {"at_s": now, "job_id": response.job_id if response else "", "state": "REFUSED"}
                jobs.append(entry)
                if response is None or not response.accepted:
                    record.errors.append(f"job at {now:.0f} s refused: {response.message if response else 'no answer'}")
            if now >= next_hold and hold_on is None:
                if client.call(client.hold, SetBool.Request(data=True)) is not None:
                    hold_on = time.monotonic() - start
            elif hold_on is not None and now >= hold_on + config.hold_for_s:
                if client.call(client.hold, SetBool.Request(data=False)) is not None:
                    # The window runs from the request of hold to the answer of release.
                    record.holds.append((hold_on, time.monotonic() - start))
                    hold_on, next_hold = None, next_hold + config.hold_every_s
            client.spin_for(0.02)
        if hold_on is not None:
            client.call(client.hold, SetBool.Request(data=False))
            record.holds.append((hold_on, time.monotonic() - start))
        record.duration_s = min(time.monotonic() - start, duration)
        record.chunks = [(t - start, inference, age) for t, _, inference, age in client.chunks[first_chunk:]
                         if t - start < record.duration_s]
        # A job still running at the end is waited for (bounded): each job must complete.
        job_deadline = time.monotonic() + 300.0
        while time.monotonic() < job_deadline and any(
                client.statuses.get(j["job_id"], "QUEUED") in ("QUEUED", "RUNNING") for j in jobs if j["job_id"]):
            client.spin_for(0.5)
        if pending_swap:
            record.errors.append(f"swap at {pending_swap['record']['at_s']:.0f} s not completed by the end")
        for entry in jobs:
            if entry["job_id"]:
                entry["state"] = client.statuses.get(entry["job_id"], "UNKNOWN")
                if entry["state"] != "SUCCEEDED":
                    record.errors.append(f"job {entry['job_id']} ended {entry['state']}")
        record.jobs = jobs
        record.errors += [f"policy_node logged: {e}" for e in client.node_errors]
    finally:
        node_process.send_signal(signal.SIGINT)
        stopped = time.monotonic()
        try:
            node_process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node_process.kill()
            record.errors.append("policy_node did not exit within 10 s of SIGINT")
        exit_s = time.monotonic() - stopped
        client.close()
        context.try_shutdown()
    raw = config.workdir / "record.json"  # the raw record, to summarise again (runtime/soak_report.py)
    raw.with_suffix(".tmp").write_text(json.dumps(asdict(record)) + "\n")
    os.replace(raw.with_suffix(".tmp"), raw)
    report = summarise(record)
    report |= {"node_exit_after_sigint_s": exit_s, "node_exit_code": node_process.returncode,
               "setup": {"cameras": list(config.cameras), "camera_hz": config.camera_hz,
                         "image_size": config.image_size, "joint_state_hz": config.joint_state_hz,
                         "joints": len(JOINTS), "swap_every_s": config.swap_every_s,
                         "job_every_s": config.job_every_s, "job_steps": config.job_steps,
                         "hold_every_s": config.hold_every_s, "hold_for_s": config.hold_for_s,
                         "students": [s["id"] for s in students], "cpus": os.cpu_count()}}
    return report
