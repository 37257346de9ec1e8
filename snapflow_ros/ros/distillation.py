"""SnapFlow distillation over ROS 2: services, an action and a status topic on a host node.

Services:  ~/start_distillation (StartDistillation): job id at once; the job runs in its own process
           ~/cancel_distillation (CancelDistillation), ~/get_distillation_status (GetDistillationStatus)
Action:    ~/distill (Distill): the same job, with DistillationStatus feedback; cancel stops it
Publishes: ~/distillation_status (DistillationStatus) on every change of any job

The policy node hosts it (swap_when_done then sets its own checkpoint parameter, the hot-swap
path with its checks); distillation_server hosts it alone and swaps a node named by parameter.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.task import Future
from snapflow_interfaces.action import Distill
from snapflow_interfaces.msg import DistillationJob, DistillationStatus
from snapflow_interfaces.srv import CancelDistillation, GetDistillationStatus, StartDistillation

from snapflow_distill.jobs import JobProcess, JobQueue, JobSpec, JobState, JobStatus
from snapflow_ros.allowed_roots import AllowedRoots
from snapflow_ros.bags.config import BagDatasetConfig
from snapflow_ros.errors import ConfigError, SnapflowError

# Every change of every job, kept for late joiners (reliable, the last 50).
STATUS_QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)
DERIVED_DATASET_CONFIG = "bag_dataset.yaml"


def spec_from_msg(job: DistillationJob) -> JobSpec:
    return JobSpec(bags=tuple(job.bag_paths), teacher=job.teacher_checkpoint, output_dir=job.output_dir,
                   dataset_config=job.dataset_config, steps=job.steps, batch_size=job.batch_size,
                   learning_rate=job.learning_rate, alpha=job.alpha, consistency_weight=job.consistency_weight,
                   seed=job.seed, device=job.device, swap_when_done=job.swap_when_done)


def status_to_msg(status: JobStatus, stamp, note: str = "") -> DistillationStatus:
    msg = DistillationStatus(job_id=status.job_id, state=int(status.state), step=status.step,
                             total_steps=status.total_steps, loss=status.loss,
                             loss_flow_matching=status.loss_flow_matching,
                             loss_consistency=status.loss_consistency,
                             steps_per_second=status.steps_per_second, eta_seconds=status.eta_seconds,
                             student_checkpoint=status.student_checkpoint,
                             message=f"{status.message}; {note}" if note else status.message)
    msg.header.stamp = stamp
    return msg


class DistillationService:
    """Distillation jobs offered by `node`.

    default_dataset: the bag dataset config for jobs that name none (None: they must name one).
    swap: called with (job id, student path) when a job that asked for it succeeds; returns what
    happened (a later outcome can be added with note()).
    allowed_roots: where a job's bags, teacher, dataset config and output directory must lie.
    """

    def __init__(self, node: Node, default_dataset: Callable[[], BagDatasetConfig | None],
                 swap: Callable[[str, str], str] | None, allowed_roots: AllowedRoots,
                 niceness: int = 10, threads: int = 0) -> None:
        self.node = node
        self.allowed_roots = allowed_roots
        self.default_dataset = default_dataset
        self.swap = swap
        self.notes: dict[str, str] = {}      # job id -> what happened after it finished (swap)
        self.waiters: dict[str, list[Future]] = {}  # job id -> action executions awaiting a change
        self.goal_jobs: dict[bytes, JobProcess] = {}
        self._lock = threading.Lock()  # waiters: job threads complete them, the executor adds them
        self._closed = False
        self.queue = JobQueue(on_update=self._changed, niceness=niceness, threads=threads)
        self.status_publisher = node.create_publisher(DistillationStatus, "~/distillation_status", STATUS_QOS)
        node.create_service(StartDistillation, "~/start_distillation", self._start)
        node.create_service(CancelDistillation, "~/cancel_distillation", self._cancel)
        node.create_service(GetDistillationStatus, "~/get_distillation_status", self._get_status)
        self.action = ActionServer(node, Distill, "~/distill", execute_callback=self._execute,
                                   goal_callback=lambda goal: GoalResponse.ACCEPT,
                                   cancel_callback=self._cancel_goal)

    # --- jobs -------------------------------------------------------------------------------
    def submit(self, job: DistillationJob) -> JobProcess:
        """Checks and queues a job; SnapflowError says why it cannot run."""
        spec = self._within_roots(spec_from_msg(job))
        if spec.swap_when_done and self.swap is None:
            raise ConfigError("swap_when_done: this server has no policy node to swap "
                              "(set its 'policy_node' parameter)")
        if not spec.dataset_config:
            dataset = self.default_dataset()
            if dataset is None:
                raise ConfigError("dataset_config is empty and this server has no default; name a bag dataset YAML")
            spec = replace(spec, dataset_config=str(Path(spec.output_dir) / DERIVED_DATASET_CONFIG))
            spec.check(dataset_config_pending=True)
            self.queue.check_output_free(spec.output_dir)  # before writing into a queued job's directory
            Path(spec.output_dir).mkdir(parents=True, exist_ok=True)
            dataset.write_yaml(Path(spec.dataset_config))
        return self.queue.submit(spec)

    def _within_roots(self, spec: JobSpec) -> JobSpec:
        """The spec with every path resolved, each inside the allowed roots (empty ones are left to
        spec.check, which names them)."""
        def check(path: str, field: str) -> str:
            return str(self.allowed_roots.check(path, field)) if path else path

        return replace(spec, bags=tuple(check(b, "bag_paths") for b in spec.bags),
                       teacher=check(spec.teacher, "teacher_checkpoint"),
                       output_dir=check(spec.output_dir, "output_dir"),
                       dataset_config=check(spec.dataset_config, "dataset_config"))

    def _changed(self, status: JobStatus) -> None:
        job = self.queue.jobs.get(status.job_id)
        if self._closed:  # the host node is gone: its jobs' last words have nowhere to go
            return
        if status.state == JobState.SUCCEEDED and job is not None and job.spec.swap_when_done:
            self.notes[status.job_id] = self.swap(status.job_id, status.student_checkpoint)
        self.status_publisher.publish(self._msg(status))
        with self._lock:
            waiting = self.waiters.pop(status.job_id, [])
        for future in waiting:
            future.set_result(status)

    def note(self, job_id: str, text: str) -> None:
        """Records what happened after a job finished (a swap's outcome) and republishes its status."""
        self.notes[job_id] = text
        self.status_publisher.publish(self._msg(self.queue.jobs[job_id].status))

    def _msg(self, status: JobStatus) -> DistillationStatus:
        return status_to_msg(status, self.node.get_clock().now().to_msg(), self.notes.get(status.job_id, ""))

    def shutdown(self) -> None:
        """Cancels every job (their processes stop; nothing they wrote becomes loadable)."""
        self._closed = True
        self.queue.cancel_all()
        self.action.destroy()

    # --- services ---------------------------------------------------------------------------
    def _start(self, request: StartDistillation.Request, response: StartDistillation.Response):
        try:
            job = self.submit(request.job)
        except SnapflowError as error:
            response.accepted, response.message = False, str(error)
            self.node.get_logger().warning(f"distillation job refused: {error}")
            return response
        response.accepted, response.job_id = True, job.job_id
        response.message = f"job {job.job_id}: {job.status.state.name.lower()}"
        self.node.get_logger().info(f"distillation job {job.job_id} started: {job.spec.command()}")
        return response

    def _cancel(self, request: CancelDistillation.Request, response: CancelDistillation.Response):
        job = self.queue.jobs.get(request.job_id)
        if job is None:
            response.success, response.message = False, f"no job {request.job_id!r}"
        elif job.cancel():
            response.success, response.message = True, f"job {request.job_id} cancelling"
        else:
            response.success = False
            response.message = f"job {request.job_id} already {job.status.state.name.lower()}"
        return response

    def _get_status(self, request: GetDistillationStatus.Request, response: GetDistillationStatus.Response):
        job = self.queue.jobs.get(request.job_id)
        response.found = job is not None
        if job is not None:
            response.status = self._msg(job.status)
        return response

    # --- action -----------------------------------------------------------------------------
    def _cancel_goal(self, goal_handle) -> CancelResponse:
        job = self.goal_jobs.get(bytes(goal_handle.goal_id.uuid))
        if job is not None:
            job.cancel()  # its CANCELLED status ends the execution below
        return CancelResponse.ACCEPT

    async def _execute(self, goal_handle) -> Distill.Result:
        result = Distill.Result()
        try:
            job = self.submit(goal_handle.request.job)
        except SnapflowError as error:
            result.message = str(error)
            goal_handle.abort()
            return result
        self.goal_jobs[bytes(goal_handle.goal_id.uuid)] = job
        while not job.status.state.finished:
            update = Future(executor=self.node.executor)
            update.add_done_callback(lambda _: None)  # completing it wakes the executor
            with self._lock:
                self.waiters.setdefault(job.job_id, []).append(update)
            if job.status.state.finished:  # finished between the check and the wait
                break
            status = await update
            goal_handle.publish_feedback(Distill.Feedback(status=self._msg(status)))
        final = self._msg(job.status)
        result.student_checkpoint, result.message = final.student_checkpoint, final.message
        result.success = job.status.state == JobState.SUCCEEDED
        if result.success:
            goal_handle.succeed()
        elif job.status.state == JobState.CANCELLED:
            goal_handle.canceled()
        else:
            goal_handle.abort()
        return result
