"""The main job: SnapFlow's whole loop on a simulated robot, through ROS 2, on one machine.

1. Demonstrations: sim_robot runs each task's scripted expert and a BagRecorder records its
   topics (one process per task, in parallel, each on its own DDS domain).
2. Teacher: flow matching on those bags (snapflow train-teacher --bags).
3. SnapFlow: policy_node serves the teacher to a running sim_robot while a distillation job,
   started through its ~/start_distillation service, trains the student in another process;
   the finished job sets the node's checkpoint parameter and the node hot-swaps.
4. Closed loop through ROS: the student drives sim_robot for a few episodes of every task.
5. The table: teacher@10, naive teacher@1 and student@1 over many episodes per task
   (snapflow sim-eval, in process), with 95% CIs and latencies, as JSON and SVG.

Bags and the teacher are cached in the work directory (keyed by the settings that made them).
Everything runs on isolated localhost DDS domains.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import rclpy
import yaml
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from snapflow_interfaces.msg import ActionChunk, DistillationJob, DistillationStatus, EpisodeResult
from snapflow_interfaces.srv import StartDistillation

from snapflow_ros.errors import SnapflowError
from snapflow_ros.files import checkpoint_id
from snapflow_ros.ros.distillation import STATUS_QOS
from snapflow_ros.ros.isolation import isolated_ros_env
from snapflow_ros.ros.qos import COMMAND_QOS
from snapflow_ros.sim.demo_config import SimDemoConfig
from snapflow_ros.sim.robot import STATE_NAMES
from snapflow_ros.sim.tasks import SIM_REVISION
from snapflow_ros.sim.topics import CAMERA, CHUNK_TOPIC, EPISODE_RESULT_PATH, sim_bag_config

REPLAN_EVERY = 8  # the teacher's chunk size (train-teacher's default)
# The README's `snapflow sim-table` run, trimmed (scripts/sim_table_reference.py writes it): the
# demo is one seed of 30 episodes; this says what several seeds of 100 showed.
SIM_TABLE_REFERENCE = Path(__file__).resolve().parents[1] / "sim" / "sim_table_reference.json"


_STARTED = time.monotonic()


def log(message: str) -> None:
    elapsed = int(time.monotonic() - _STARTED)
    print(f"sim-demo [{elapsed // 60:02d}:{elapsed % 60:02d}]: {message}", file=sys.stderr, flush=True)


def python_module(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def is_cached(directory: Path, key: dict) -> bool:
    """True when `directory` holds what `key` describes; otherwise clears it for a fresh build."""
    stamp = directory / "settings.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == json.loads(json.dumps(key)):  # tuples as lists
        return True
    shutil.rmtree(directory, ignore_errors=True)
    return False


def stamp_cache(directory: Path, key: dict) -> None:
    (directory / "settings.json").write_text(json.dumps(key, indent=2) + "\n")


def record_key(config: SimDemoConfig) -> dict:
    """What the recorded demonstrations depend on."""
    task_file = None
    if config.task_file is not None:  # its tasks may change under the same path
        task_file = {"path": str(config.task_file),
                     "sha256": hashlib.sha256(Path(config.task_file).read_bytes()).hexdigest()}
    return {"sim_revision": SIM_REVISION, "tasks": config.tasks, "demo_episodes": config.demo_episodes,
            "image_size": config.image_size, "rate_hz": config.rate_hz, "seed": config.seed,
            "task_file": task_file}


def _task_file_flag(config: SimDemoConfig) -> list[str]:
    return ["--task-file", str(config.task_file)] if config.task_file is not None else []


def record(config: SimDemoConfig, say: Callable[[str], None] = log) -> list[Path]:
    key = record_key(config)
    bags_dir = config.workdir / "bags"
    bags = [bags_dir / task for task in config.tasks]
    if is_cached(bags_dir, key):
        say(f"demonstrations: cached in {bags_dir}")
        return bags
    bags_dir.mkdir(parents=True)
    say(f"demonstrations: recording {config.demo_episodes} expert episodes per task through ROS (stepped, "
        "simulated clock), tasks in parallel")
    processes = []
    for i, (task, bag) in enumerate(zip(config.tasks, bags)):
        env = isolated_ros_env(domain_id=101 + i)  # one domain per recording: same topic names, no crosstalk
        processes.append(subprocess.Popen(
            python_module("snapflow_ros.cli.main", "sim-record", "--task", task,
                    "--episodes", str(config.demo_episodes),
                    "--output", str(bag), "--seed", str(config.seed + i), "--image-size", str(config.image_size),
                    "--rate-hz", str(config.rate_hz), *_task_file_flag(config)),
            env=env, stdout=subprocess.PIPE, text=True))
    for task, process in zip(config.tasks, processes):
        output, _ = process.communicate()
        if process.returncode != 0:
            raise SnapflowError(f"recording {task} failed (exit code {process.returncode})")
        outcome = json.loads(output)
        say(f"demonstrations: {task}: {outcome['successes']}/{outcome['episodes']} expert successes "
            f"-> {outcome['bag']}")
    stamp_cache(bags_dir, key)
    return bags


def train_teacher(config: SimDemoConfig, bags: list[Path], bag_config: Path,
                  say: Callable[[str], None] = log) -> Path:
    key = record_key(config) | {"teacher_steps": config.teacher_steps, "batch_size": config.batch_size}
    run = config.workdir / "teacher"
    if is_cached(run, key) and (run / "policy" / "config.json").is_file():
        say(f"teacher: cached in {run / 'policy'}")
        return run / "policy"
    say(f"teacher: flow matching for {config.teacher_steps} steps on the bags")
    subprocess.run(python_module("snapflow_ros.cli.main", "train-teacher", "--bags", *map(str, bags), "--bag-config",
                           str(bag_config), "--output", str(run), "--steps", str(config.teacher_steps),
                           "--batch-size", str(config.batch_size), "--holdout-episodes", "0",
                           "--checkpoint-every", "0", "--log-every", str(max(config.teacher_steps // 10, 1)),
                           "--seed", str(config.seed)), check=True, stdout=subprocess.DEVNULL)
    stamp_cache(run, key)
    return run / "policy"


class DemoClient(Node):
    """Follows the policy node's chunks, the distillation status and sim_robot's episode results."""

    def __init__(self, **kwargs) -> None:
        super().__init__("sim_demo", **kwargs)
        self.chunks: list[tuple[float, str]] = []
        self.statuses: list[DistillationStatus] = []
        self.results: list[EpisodeResult] = []
        self.create_subscription(ActionChunk, CHUNK_TOPIC,
                                 lambda m: self.chunks.append((time.monotonic(), m.policy_id)), COMMAND_QOS)
        self.create_subscription(DistillationStatus, "policy_node/distillation_status", self.statuses.append,
                                 STATUS_QOS)
        self.create_subscription(EpisodeResult, EPISODE_RESULT_PATH, self.results.append, COMMAND_QOS)


class RosSession:
    """policy_node (and sim_robot runs) as processes, and this process's client node."""

    def __init__(self, config: SimDemoConfig, teacher: Path) -> None:
        self.config = config
        os.environ.update(isolated_ros_env())
        params = config.workdir / "policy_node.yaml"
        params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
            "checkpoint": str(teacher), "joint_names": list(STATE_NAMES), "cameras": [CAMERA],
            # A new chunk from the first complete observation after 90% of the previous one is
            # executed, i.e. the whole chunk, as sim-eval's chunk period = chunk size. The timer is a
            # fallback only: at 20 Hz it would often fire first and take the previous tick's frame.
            "chunk_rate_hz": 2.0, "watermark": 0.9, "action_dt": 1.0 / config.rate_hz, "max_input_age": 0.5,
            "distillation_threads": 1,
            # Bags, teacher and the distillation job's output all lie in the demo's workdir.
            "allowed_roots": [str(config.workdir)]}}}))
        log(f"ROS: policy_node serving the teacher (ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']}, localhost)")
        self.node_process = subprocess.Popen(python_module("snapflow_ros.ros.policy_node", "--ros-args",
                                                           "--params-file", str(params)),
                                             stderr=subprocess.DEVNULL)
        self.sim_process: subprocess.Popen | None = None
        rclpy.init()
        self.executor = SingleThreadedExecutor()
        self.client = DemoClient()
        self.executor.add_node(self.client)

    def spin_until(self, condition, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise SnapflowError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            if self.node_process.poll() is not None:
                raise SnapflowError(f"policy_node exited with code {self.node_process.returncode}")
            self.executor.spin_once(timeout_sec=0.1)

    def start_sim(self, task: str, episodes: int, seed: int) -> None:
        self.stop_sim()
        self.sim_process = subprocess.Popen(python_module(
            "snapflow_ros.ros.sim_robot", "--ros-args", "-p", f"task:={task}", "-p", f"episodes:={episodes}",
            "-p", f"seed:={seed}", "-p", f"image_size:={self.config.image_size}",
            "-p", f"control_rate_hz:={self.config.rate_hz}",
            *(["-p", f"task_file:={self.config.task_file}"] if self.config.task_file else [])),
            stderr=subprocess.DEVNULL)

    def stop_sim(self) -> None:
        if self.sim_process is not None:
            _stop(self.sim_process)
            self.sim_process = None

    def distill(self, bags: list[Path], teacher: Path, bag_config: Path, output: Path) -> Path:
        from rclpy.task import Future

        shutil.rmtree(output, ignore_errors=True)
        client = self.client.create_client(StartDistillation, "policy_node/start_distillation")
        self.spin_until(lambda: client.service_is_ready(), 60.0, "policy_node's distillation service")
        job = DistillationJob(bag_paths=[str(b) for b in bags], teacher_checkpoint=str(teacher),
                              output_dir=str(output), dataset_config=str(bag_config),
                              steps=self.config.student_steps, batch_size=self.config.batch_size,
                              seed=self.config.seed, swap_when_done=True)
        future: Future = client.call_async(StartDistillation.Request(job=job))
        self.spin_until(future.done, 30.0, "the distillation service's answer")
        answer = future.result()
        if not answer.accepted:
            raise SnapflowError(f"distillation refused: {answer.message}")
        log(f"SnapFlow: job {answer.job_id} started through ~/start_distillation; the node keeps serving")
        shown = [0]

        def finished() -> bool:
            mine = [s for s in self.client.statuses if s.job_id == answer.job_id]
            for status in mine[shown[0]:]:
                if status.state == DistillationStatus.RUNNING and status.step:
                    log(f"SnapFlow: step {status.step}/{status.total_steps} loss {status.loss:.4f} "
                        f"{status.steps_per_second:.1f} steps/s eta {status.eta_seconds:.0f}s")
            shown[0] = len(mine)
            return bool(mine) and mine[-1].state >= DistillationStatus.SUCCEEDED

        started = time.monotonic()
        self.spin_until(finished, 3600.0, "the distillation job")
        final = [s for s in self.client.statuses if s.job_id == answer.job_id][-1]
        if final.state != DistillationStatus.SUCCEEDED:
            raise SnapflowError(f"distillation failed: {final.message}")
        during = [c for c in self.client.chunks if c[0] >= started]
        rate = len(during) / max(time.monotonic() - started, 1e-9)
        log(f"SnapFlow: {final.message}; the node published {rate:.1f} chunks/s while the job trained")
        student_id = checkpoint_id(Path(final.student_checkpoint))
        self.spin_until(lambda: self.client.chunks and self.client.chunks[-1][1] == student_id, 60.0,
                        "the hot swap to the student")
        log(f"hot swap: chunks now come from {student_id}")
        return Path(final.student_checkpoint)

    def closed_loop(self, task: str, episodes: int, seed: int) -> list[EpisodeResult]:
        self.client.results.clear()
        self.start_sim(task, episodes, seed)
        self.spin_until(lambda: len(self.client.results) >= episodes, 60.0 * episodes, f"{task} episodes")
        self.stop_sim()
        return list(self.client.results)

    def close(self) -> None:
        self.stop_sim()
        _stop(self.node_process)
        self.executor.shutdown()
        self.client.destroy_node()
        rclpy.try_shutdown()


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def _ros_line(task: str, row: dict) -> str:
    latency = ", ".join(f"{q} {v:.1f} ms" for q, v in row["latency_ms"].items())
    return (f"through ROS, student@1 on {task}: {row['successes']}/{row['episodes']} successes; "
            f"observation -> chunk at the robot {latency} ({row['chunks']} chunks)")


def print_reference(path: Path = SIM_TABLE_REFERENCE) -> None:
    from snapflow_ros.sim.statistics import summary_lines

    if not path.is_file():
        return
    reference = json.loads(path.read_text())
    print(f"\nBeside it, what the full sim-table showed ({reference['command']}; {reference['machine']}):")
    print("\n".join(summary_lines(reference)))


def run_sim_demo(config: SimDemoConfig) -> dict:
    from snapflow_ros.runtime.timing import percentiles
    from snapflow_ros.sim.evaluation import Candidate, evaluate_task, overall, write_plot
    from snapflow_ros.sim.evaluation_table import format_table
    from snapflow_ros.sim.tasks import get_task

    started = time.perf_counter()
    config.workdir.mkdir(parents=True, exist_ok=True)
    bags = record(config)
    bag_config = config.workdir / "bag_dataset.yaml"
    sim_bag_config(config.rate_hz).write_yaml(bag_config)
    teacher = train_teacher(config, bags, bag_config)

    session = RosSession(config, teacher)
    try:
        session.start_sim(config.tasks[0], 0, config.seed + 500)  # the robot the node serves while the job trains
        session.spin_until(lambda: len(session.client.chunks) >= 5, 120.0, "chunks from policy_node")
        student = session.distill(bags, teacher, bag_config, config.workdir / "student")
        ros_results = {}
        for i, task in enumerate(config.tasks):
            results = session.closed_loop(task, config.ros_episodes, config.seed + 600 + i)
            latencies = [value for r in results for value in r.chunk_latency_ms]
            ros_results[task] = {"episodes": len(results), "successes": sum(r.success for r in results),
                                 "failures": [r.failure for r in results if not r.success],
                                 "chunks": len(latencies), "latency_ms": percentiles(latencies)}
            log(_ros_line(task, ros_results[task]))
    finally:
        session.close()

    log(f"sim-eval: {config.eval_episodes} episodes per task and policy")
    # teacher@2 is the student's distillation target (the two-step Euler shortcut).
    candidates = [Candidate("teacher@10", teacher, 10), Candidate("teacher@2", teacher, 2),
                  Candidate("teacher@1", teacher, 1), Candidate("student@1", student, 1)]
    done = f"/{config.eval_episodes}"
    per_task = {task: evaluate_task(get_task(task, config.task_file), candidates, config.eval_episodes,
                                    config.seed + 1000 + i, config.image_size, replan_every=REPLAN_EVERY,
                                    progress=lambda line: log(f"sim-eval: {line} successes") if line.endswith(done)
                                    else None)
                for i, task in enumerate(config.tasks)}
    report = {"tasks": per_task, "overall": overall(per_task), "ros_closed_loop_student": ros_results,
              "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
              "teacher": str(teacher), "student": str(student), "wall_seconds": time.perf_counter() - started}
    write_plot(per_task, config.workdir / "success_vs_latency.svg")
    (config.workdir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(format_table(report))
    for task, row in ros_results.items():
        print(_ros_line(task, row))
    print_reference()
    log(f"report: {config.workdir / 'report.json'}, plot: {config.workdir / 'success_vs_latency.svg'} "
        f"({report['wall_seconds']:.0f} s)")
    return report
