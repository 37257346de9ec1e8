"""Distillation jobs in their own process: start, follow progress, cancel. No ROS here.

A job is `snapflow distill TEACHER --bags ... --progress-format json` in a child process at lower
CPU priority, so a control loop in the parent keeps its cores. The child reports on stdout in JSON
lines (snapflow_ros/events.py): progress events update a JobStatus, a done event names the
student, an error event carries the reason of a failure. Its stderr is for humans only and goes to
OUTPUT/job.log. The student appears at OUTPUT/policy only when complete (atomic rename); a
cancelled or crashed job never leaves one there.

One output directory, one job: a queue refuses a second job for the directory of a queued or
running one, and the command holds OUTPUT/.lock for its run, so a job of another process is refused
too. A job that was killed (or failed writing) leaves its periodic checkpoints: the same job
submitted again continues from the newest one (a resumed event; its status message says the step).
The child watches its parent: a job server that is killed does not leave its job running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from enum import IntEnum
from pathlib import Path
from typing import ClassVar

from snapflow_ros.errors import ConfigError, SnapflowError
from snapflow_ros.events import DoneEvent, ErrorEvent, ProgressEvent, ResumedEvent, parse_line
from snapflow_ros.files import refuse_if_held

JOB_FILE = "job.json"
JOB_LOG = "job.log"  # the child's stderr, for humans; never parsed
JOB_ID_ENV = "SNAPFLOW_JOB_ID"          # the child records it in OUTPUT/.lock
PARENT_PID_ENV = "SNAPFLOW_PARENT_PID"  # the child stops once this process is no longer its parent


class JobState(IntEnum):
    """Same values as snapflow_interfaces/msg/DistillationStatus."""

    QUEUED = 0
    RUNNING = 1
    SUCCEEDED = 2
    FAILED = 3
    CANCELLED = 4

    @property
    def finished(self) -> bool:
        return self >= JobState.SUCCEEDED


@dataclass(frozen=True)
class JobSpec:
    """What to distil: fields of snapflow_interfaces/msg/DistillationJob (0/empty: defaults)."""

    bags: tuple[str, ...]
    teacher: str
    output_dir: str
    dataset_config: str            # bag dataset YAML
    steps: int = 0
    batch_size: int = 0
    learning_rate: float = 0.0
    alpha: float = 0.0
    consistency_weight: float = 0.0
    seed: int = 0
    device: str = ""
    swap_when_done: bool = False

    def check(self, dataset_config_pending: bool = False) -> None:
        """Cheap checks before a process is started; ConfigError names the field and the problem.
        dataset_config_pending: the caller writes that file once the rest is known to be fine."""
        if not self.bags:
            raise ConfigError("job: bag_paths is empty")
        missing = [b for b in self.bags if not Path(b).exists()]
        if missing:
            raise ConfigError(f"job: bag_paths {missing} do not exist")
        if not (Path(self.teacher) / "config.json").is_file():
            raise ConfigError(f"job: teacher_checkpoint {self.teacher!r} is not a checkpoint directory "
                              f"(config.json missing)")
        if not self.output_dir:
            raise ConfigError("job: output_dir is empty")
        output = Path(self.output_dir).resolve()
        if output == Path(self.teacher).resolve() or Path(self.teacher).resolve() in output.parents:
            raise ConfigError(f"job: output_dir {self.output_dir} is inside the teacher checkpoint")
        if (output / "policy").exists():
            raise ConfigError(f"job: output_dir {self.output_dir} already holds a student "
                              f"({output / 'policy'}); choose a new directory")
        # Checkpoints without a student (a killed or failed job) are fine: the job resumes from them.
        refuse_if_held(output, "job: output_dir")
        if not dataset_config_pending and not Path(self.dataset_config).is_file():
            raise ConfigError(f"job: dataset_config {self.dataset_config!r} is not a file")
        for name in ("steps", "batch_size", "learning_rate", "consistency_weight", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"job: {name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"job: alpha must be in [0, 1] (0: default), got {self.alpha}")

    def command(self) -> list[str]:
        """The snapflow distill command line this job runs."""
        return DistillCommand.for_job(self).argv()


@dataclass(frozen=True)
class DistillCommand:
    """`snapflow distill` for one job, as typed values. Field names are the command's argument
    names (argparse dests), so argv() maps every field the same way; None keeps the command's
    default."""

    teacher: str
    bags: tuple[str, ...]
    bag_config: str
    output: str
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    alpha: float | None = None
    consistency_weight: float | None = None
    seed: int = 0
    device: str = "auto"
    holdout_episodes: int = 0       # a job trains on every recorded episode
    log_every: int | None = None
    checkpoint_every: int | None = None
    progress_format: str = "json"   # the channel JobProcess reads

    POSITIONAL: ClassVar[tuple[str, ...]] = ("teacher",)

    @classmethod
    def for_job(cls, spec: JobSpec) -> DistillCommand:
        def given(value):  # a job message's 0 / empty string means "the default"
            return value or None

        return cls(teacher=spec.teacher, bags=tuple(spec.bags), bag_config=spec.dataset_config,
                   output=spec.output_dir, steps=given(spec.steps), batch_size=given(spec.batch_size),
                   lr=given(spec.learning_rate), alpha=given(spec.alpha),
                   consistency_weight=given(spec.consistency_weight), seed=spec.seed,
                   device=spec.device or "auto",
                   # About 20 progress reports per job, at most 50 steps apart.
                   log_every=max(1, min(50, (spec.steps or 2000) // 20)),
                   # A killed job loses at most a tenth of its steps (500 at most): the same job
                   # submitted again resumes. Derived from the steps alone, so a resubmission matches.
                   checkpoint_every=max(1, min(500, (spec.steps or 2000) // 10)))

    def argv(self, python: str = sys.executable) -> list[str]:
        argv = [python, "-m", "snapflow_ros.cli.main", "distill"]
        argv += [str(getattr(self, name)) for name in self.POSITIONAL]  # first: --bags takes 1+ values
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in self.POSITIONAL or value is None or value is False:
                continue
            flag = "--" + f.name.replace("_", "-")
            if value is True:
                argv.append(flag)
            elif isinstance(value, tuple):
                argv += [flag, *map(str, value)]
            else:
                argv += [flag, str(value)]
        return argv


@dataclass
class JobStatus:
    job_id: str
    state: JobState = JobState.QUEUED
    step: int = 0
    total_steps: int = 0
    loss: float = float("nan")
    loss_flow_matching: float = float("nan")
    loss_consistency: float = float("nan")
    steps_per_second: float = 0.0
    eta_seconds: float = -1.0
    student_checkpoint: str = ""
    message: str = ""


class JobProcess:
    """One job's child process. on_update(status) is called (from a reader thread) on every change."""

    def __init__(self, spec: JobSpec, on_update: Callable[[JobStatus], None] | None = None,
                 niceness: int = 10, threads: int = 0) -> None:
        self.spec = spec
        self.status = JobStatus(uuid.uuid4().hex[:12])
        self.on_update = on_update
        self.niceness, self.threads = niceness, threads
        self.process: subprocess.Popen | None = None
        self._done: DoneEvent | None = None
        self._error: ErrorEvent | None = None
        self._resumed: ResumedEvent | None = None
        self._cancelled = False
        self._lock = threading.Lock()
        self.finished = threading.Event()

    @property
    def job_id(self) -> str:
        return self.status.job_id

    def _update(self, **changes) -> None:
        with self._lock:
            if self.status.state.finished and "state" not in changes:
                return
            self.status = replace(self.status, **changes)
            status = self.status
        if self.on_update:
            self.on_update(status)

    def start(self) -> None:
        """Starts the child; ConfigError when another run holds the output directory (taken while
        this job was queued), OSError when no process can be started."""
        output = Path(self.spec.output_dir)
        refuse_if_held(output, "output_dir")  # its job.json and job.log are not ours to touch
        output.mkdir(parents=True, exist_ok=True)
        (output / JOB_FILE).write_text(json.dumps({"job_id": self.job_id, **asdict(self.spec)}, indent=2) + "\n")
        env = dict(os.environ) | {JOB_ID_ENV: self.job_id, PARENT_PID_ENV: str(os.getpid())}
        if self.threads:
            env |= {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        # Own session: a cancel signals the job's whole process group and nothing else. Bytes that
        # are not UTF-8 are replaced, so no print of the child can stop the reader.
        with (output / JOB_LOG).open("a") as log:
            self.process = subprocess.Popen(self.spec.command(), stdout=subprocess.PIPE, stderr=log,
                                            text=True, encoding="utf-8", errors="replace", env=env,
                                            start_new_session=True)
        try:
            os.setpriority(os.PRIO_PROCESS, self.process.pid, self.niceness)
        except OSError:
            pass  # the job still runs, at normal priority
        self._update(state=JobState.RUNNING, message="running", total_steps=self.spec.steps)
        threading.Thread(target=self._follow, daemon=True, name=f"job-{self.job_id}").start()

    def fail(self, message: str) -> None:
        self._update(state=JobState.FAILED, eta_seconds=-1.0, message=message)
        self.finished.set()

    def _follow(self) -> None:
        with self.process.stdout:  # closed at EOF: the job stays listed, its pipe must not (a soak leaked one per job)
            for line in self.process.stdout:
                self._handle(parse_line(line))  # None: another print of the command
        code = self.process.wait()
        student = Path(self._done.student) if self._done and self._done.student else None
        if self._cancelled:
            self._update(state=JobState.CANCELLED, message="cancelled; no student was written", eta_seconds=-1.0)
        elif code == 0 and self._error is None and student and (student / "config.json").is_file():
            self._update(state=JobState.SUCCEEDED, student_checkpoint=str(student), eta_seconds=0.0,
                         message=f"student written to {student}{self._resumed_note()}")
        else:
            self.fail(self._failure(code))
        self.finished.set()

    def _handle(self, event: ProgressEvent | DoneEvent | ErrorEvent | None) -> None:
        if isinstance(event, ProgressEvent):
            self._update(step=event.step, total_steps=event.total_steps, loss=event.loss,
                         loss_flow_matching=event.loss_flow_matching, loss_consistency=event.loss_consistency,
                         steps_per_second=event.steps_per_second, eta_seconds=event.eta_seconds)
        elif isinstance(event, ResumedEvent):
            self._resumed = event
            self._update(step=event.step, message=f"running{self._resumed_note()}")
        elif isinstance(event, DoneEvent):
            self._done = event
        elif isinstance(event, ErrorEvent):
            self._error = event

    def _resumed_note(self) -> str:
        if self._resumed is None:
            return ""
        return f" (resumed from step {self._resumed.step}, {self._resumed.checkpoint})"

    def _failure(self, code: int) -> str:
        if self._error is not None:  # the command's own reason, naming bag, topic and field
            return f"{self._error.type}: {self._error.message}"
        log = Path(self.spec.output_dir) / JOB_LOG
        how = f"was killed by signal {-code} ({_signal_name(-code)})" if code < 0 else f"exited with code {code}"
        if code == 0:
            how = "exited without reporting a student"
        resume = ""
        if code != 0 and any((Path(self.spec.output_dir) / "checkpoints").glob("step-*")):
            resume = "; submitting the same job again resumes from its newest checkpoint"
        return f"job process {how} and reported no error (its stderr: {log}){resume}"

    def cancel(self) -> bool:
        """Stops the job (SIGTERM, then SIGKILL after 10 s); False if it had already finished."""
        if self.status.state.finished:
            return False
        self._cancelled = True
        if self.process is None:  # still queued
            self._update(state=JobState.CANCELLED, message="cancelled before it started")
            self.finished.set()
            return True
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):  # gone already (a zombie group: EPERM on macOS)
            return True

        def escalate() -> None:
            if not self.finished.wait(10.0):
                self.kill()
        threading.Thread(target=escalate, daemon=True).start()
        return True

    def kill(self) -> None:
        """SIGKILL to the job's process group, if it still has one."""
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown signal"


@dataclass
class JobQueue:
    """Jobs run one at a time, in order (a robot computer has no cores to spare for two)."""

    on_update: Callable[[JobStatus], None] | None = None
    niceness: int = 10
    threads: int = 0
    jobs: dict[str, JobProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.RLock()  # a job failing to start reports (and starts the next) under it
        self._closed = False            # cancel_all: no further job starts

    def submit(self, spec: JobSpec) -> JobProcess:
        """Queues a job (started at once when none runs); ConfigError says why it cannot run, e.g.
        its output_dir is that of a queued or running job."""
        spec.check()
        job = JobProcess(spec, self._changed, niceness=self.niceness, threads=self.threads)
        with self._lock:
            self.check_output_free(spec.output_dir)
            self.jobs[job.job_id] = job
        self._changed(job.status)
        self._start_next()
        return job

    def check_output_free(self, output_dir: str) -> None:
        """ConfigError when a queued or running job of this queue writes `output_dir` (however it
        is spelled), or the queue shuts down. submit checks it; a caller that writes into the
        directory before submitting (a derived dataset config) can check first."""
        output = Path(output_dir).resolve()
        with self._lock:
            if self._closed:
                raise ConfigError("job: this queue is shutting down")
            for other in self.jobs.values():
                if not other.status.state.finished and Path(other.spec.output_dir).resolve() == output:
                    raise ConfigError(f"job: output_dir {output_dir} is the output of job {other.job_id} "
                                      f"({other.status.state.name.lower()}); wait for it, cancel it or choose "
                                      f"another directory")

    def _changed(self, status: JobStatus) -> None:
        if self.on_update:
            self.on_update(status)
        if status.state.finished:
            self._start_next()

    def _start_next(self) -> None:
        with self._lock:
            if self._closed or any(j.status.state == JobState.RUNNING for j in self.jobs.values()):
                return
            queued = [j for j in self.jobs.values() if j.status.state == JobState.QUEUED]
            if not queued:
                return
            job = queued[0]
            try:
                job.start()
            except (OSError, SnapflowError) as error:
                job.fail(f"cannot start the job process: {error}")

    def cancel_all(self, wait_s: float = 0.5) -> None:
        """Cancels every job and starts no other; waits up to wait_s for the running ones to end
        (SIGTERM: they remove their temporaries), then kills the process groups of the rest, so no
        job outlives the host that shuts down (its escalation thread would not)."""
        with self._lock:
            self._closed = True
            jobs = list(self.jobs.values())
        for job in jobs:
            job.cancel()
        deadline = time.monotonic() + wait_s
        for job in jobs:
            if job.process is None:
                continue
            try:
                job.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                job.kill()
