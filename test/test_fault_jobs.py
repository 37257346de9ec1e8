"""The distillation-job fault matrix, over the real `snapflow` commands and the real job processes:
a job SIGKILLed mid-run (the host node keeps serving; the same job submitted again resumes), a full
disk while writing a checkpoint, the student or an export (RLIMIT_FSIZE: writes fail with EFBIG),
a bag deleted under a job, and two jobs writing one output directory (in one queue and across
processes). Each leaves nothing half-written under a final name and says what happened."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_distillation_jobs import _spec, _wait
from test_distillation_service import PolicyRig, _call, _job

from snapflow_distill.jobs import JOB_FILE, JOB_LOG, JobQueue, JobSpec, JobState
from snapflow_ros.errors import ConfigError
from snapflow_ros.events import DoneEvent, ErrorEvent, ProgressEvent, ResumedEvent, parse_line
from snapflow_ros.files import LOCK, lock_holder, output_lock, read_tensors

SNAPFLOW = [sys.executable, "-m", "snapflow_ros.cli.main"]
# The command run with a file-size limit (RLIMIT_FSIZE), as a full disk: CPython ignores SIGXFSZ,
# so a write past the limit fails with EFBIG ("File too large").
FSIZE_WRAPPER = ("import os, resource, sys; n = int(sys.argv[1]); "
                 "resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); os.execv(sys.argv[2], sys.argv[2:])")


def _limited(argv: list[str], limit: int) -> list[str]:
    return [sys.executable, "-c", FSIZE_WRAPPER, str(limit), *argv]


def _distill(recorded: dict, output: Path, steps: int, *flags: str) -> list[str]:
    return [*SNAPFLOW, "distill", recorded["teacher"], "--bags", *recorded["bags"], "--bag-config",
            recorded["config"], "--output", str(output), "--steps", str(steps), "--batch-size", "4",
            "--holdout-episodes", "0", "--device", "cpu", "--progress-format", "json", *flags]


def _run(argv: list[str], timeout_s: float = 180.0) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)


def _events(stdout: str) -> list:
    return [e for e in map(parse_line, stdout.splitlines()) if e is not None]


def _hashes(*roots: Path) -> dict[str, str]:
    """Every file under the roots (names included, so an added -wal/-shm/journal file shows) -> sha256."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for root in roots for p in sorted(Path(root).rglob("*")) if p.is_file()}


def _temporaries(*roots: Path) -> list[str]:
    return [str(p) for root in roots for p in Path(root).rglob("*") if ".tmp-" in p.name or ".old-" in p.name]


def _step(checkpoint: Path) -> int:
    return int(checkpoint.name.removeprefix("step-"))


def _checkpoints(output: Path) -> list[Path]:
    return sorted((output / "checkpoints").glob("step-*"))


# --- 1. the job's process SIGKILLed mid-run -------------------------------------------------------

@pytest.mark.ros
@pytest.mark.slow
def test_sigkilled_job_fails_the_node_keeps_serving_and_the_same_job_resumes(ros, recorded, tmp_path, tmp_root):
    from snapflow_interfaces.msg import DistillationStatus
    from snapflow_interfaces.srv import StartDistillation

    from snapflow_ros.families.registry import load_policy

    rig = PolicyRig(ros, recorded["teacher"], [tmp_root])
    rig.follow_status("/policy_node/distillation_status")
    assert ros.spin_until(lambda: len(rig.chunks) >= 2, 30.0)
    output = tmp_path / "student"
    request = StartDistillation.Request(job=_job(recorded, output, steps=120, batch_size=4))
    first = _call(ros, rig.probe, StartDistillation, "/policy_node/start_distillation", request)
    assert first.accepted, first.message
    job = rig.node.distillation.queue.jobs[first.job_id]
    # 120 steps: a checkpoint every 12 (a tenth); killed once the first is on disk, as by the OOM killer.
    assert ros.spin_until(lambda: _checkpoints(output) or job.status.state.finished, 120.0)
    assert job.status.state == JobState.RUNNING and job.status.step > 0, job.status
    os.kill(job.process.pid, signal.SIGKILL)

    def final(job_id: str):
        return next((s for s in rig.statuses if s.job_id == job_id and s.state >= DistillationStatus.SUCCEEDED), None)

    assert ros.spin_until(lambda: final(first.job_id) is not None, 30.0)
    failed = final(first.job_id)
    assert failed.state == DistillationStatus.FAILED
    assert "job process was killed by signal 9 (SIGKILL)" in failed.message
    assert "submitting the same job again resumes from its newest checkpoint" in failed.message
    assert not (output / "policy").exists() and lock_holder(output) is None  # the kernel dropped its lock
    served = len(rig.chunks)
    ros.spin_for(1.5)
    assert len(rig.chunks) >= served + 5  # the node serves on (10 Hz)
    newest = _step(_checkpoints(output)[-1])
    assert 12 <= newest < 120

    # The same job again: accepted (checkpoints, no student), continues from the newest checkpoint.
    again = _call(ros, rig.probe, StartDistillation, "/policy_node/start_distillation", request)
    assert again.accepted, again.message
    assert ros.spin_until(lambda: final(again.job_id) is not None, 180.0)
    done = final(again.job_id)
    assert done.state == DistillationStatus.SUCCEEDED, done.message
    resumed = f"resumed from step {newest}, {output / 'checkpoints' / f'step-{newest:08d}'}"
    assert resumed in done.message and done.student_checkpoint == str(output / "policy")
    running = [s for s in rig.statuses if s.job_id == again.job_id and s.state == DistillationStatus.RUNNING]
    assert any(s.step == newest and resumed in s.message for s in running)
    assert min(s.step for s in running if s.step) >= newest  # nothing before the checkpoint was redone
    load_policy(output / "policy")
    assert json.loads((output / "policy" / "provenance.json").read_text())["steps"] == 120
    assert len(rig.chunks) > served + 5


# --- 2. a full disk (file-size limit) while writing ------------------------------------------------

@pytest.mark.slow
def test_checkpoint_write_on_a_full_disk_fails_naming_it_and_the_previous_one_resumes(recorded, tmp_path):
    from snapflow_ros.families.registry import load_policy

    output = tmp_path / "run"
    argv = _distill(recorded, output, 200, "--checkpoint-every", "10", "--log-every", "1")
    # A first run killed after its first checkpoint (checkpoint 10 is written before step 11 starts).
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in first.stdout:
        event = parse_line(line)
        if isinstance(event, ProgressEvent) and event.step > 10:
            break
    first.kill()
    first.wait(30)
    previous = _checkpoints(output)[-1]
    k = _step(previous)
    assert 10 <= k <= 180, k  # the next checkpoint comes before the student
    complete = _hashes(*_checkpoints(output))

    # Limit between the checkpoint's two tensor files: policy.safetensors fits, the state does not.
    small, large = ((previous / name).stat().st_size for name in ("policy.safetensors", "training_state.safetensors"))
    limited = _run(_limited(argv, (small + large) // 2))
    failing = output / "checkpoints" / f"step-{k + 10:08d}" / "training_state.safetensors"
    reason = f"cannot write {failing}: SafetensorError: "
    assert limited.returncode == 2, limited.stderr
    assert f"snapflow distill: error: {reason}" in limited.stderr and "File too large" in limited.stderr
    assert "Traceback" not in limited.stderr
    events = _events(limited.stdout)
    assert events[0] == ResumedEvent(k, str(previous))
    assert isinstance(events[-1], ErrorEvent) and events[-1].type == "CheckpointError"
    assert events[-1].message.startswith(reason)
    # Nothing half-written under a final name; the earlier checkpoints as they were, loadable.
    assert not failing.parent.exists() and not (output / "policy").exists()
    assert _temporaries(output) == []
    assert _hashes(*_checkpoints(output)) == complete
    assert json.loads((previous / "training_state.json").read_text())["step"] == k
    assert read_tensors(previous / "policy.safetensors") and read_tensors(previous / "training_state.safetensors")

    # What a run killed mid-write leaves (temporary siblings) is ignored and removed by the next one.
    planted = [output / "checkpoints" / f".step-{k + 20:08d}.tmp-killed", output / ".policy.tmp-killed"]
    for directory in planted:
        directory.mkdir()
        (directory / "policy.safetensors").write_bytes(b"\x00half")
    resumed = _run(argv)
    assert resumed.returncode == 0, resumed.stderr
    events = _events(resumed.stdout)
    assert events[0] == ResumedEvent(k, str(previous)) and events[-1] == DoneEvent(student=str(output / "policy"))
    assert [e.step for e in events if isinstance(e, ProgressEvent)][0] == k + 1
    load_policy(output / "policy")
    assert _temporaries(output) == []


@pytest.mark.slow
def test_student_write_on_a_full_disk_fails_the_job_and_the_same_job_resumes(recorded, tmp_path, monkeypatch):
    from snapflow_ros.families.registry import load_policy

    # The student's weights file is as large as its teacher's; every checkpoint file is smaller.
    limit = (Path(recorded["teacher"]) / "model.safetensors").stat().st_size - 1
    command = JobSpec.command
    monkeypatch.setattr(JobSpec, "command", lambda self: _limited(command(self), limit))
    updates = []
    queue = JobQueue(on_update=updates.append)
    output = tmp_path / "run"
    spec = _spec(recorded, output, steps=20, batch_size=4)  # a checkpoint every 2 steps, 2 kept
    job = queue.submit(spec)
    _wait(job, lambda s: s.state.finished)
    assert job.status.state == JobState.FAILED
    assert job.status.message.startswith(f"CheckpointError: cannot write {output / 'policy'}: SafetensorError: ")
    assert "File too large" in job.status.message
    assert "Traceback" not in (output / JOB_LOG).read_text()
    assert not (output / "policy").exists() and _temporaries(output) == []
    assert [c.name for c in _checkpoints(output)] == ["step-00000016", "step-00000018"]
    assert all(p.stat().st_size < limit for c in _checkpoints(output) for p in c.iterdir())

    monkeypatch.setattr(JobSpec, "command", command)  # space again
    again = queue.submit(spec)
    _wait(again, lambda s: s.state.finished)
    assert again.status.state == JobState.SUCCEEDED, again.status.message
    note = f"(resumed from step 18, {output / 'checkpoints' / 'step-00000018'})"
    assert again.status.message == f"student written to {output / 'policy'} {note}"
    assert any(u.job_id == again.job_id and u.step == 18 and u.message == f"running {note}" for u in updates)
    load_policy(output / "policy")


@pytest.mark.slow
def test_export_on_a_full_disk_fails_naming_the_graph_and_leaves_the_previous_export(recorded, tmp_path):
    import onnx

    from snapflow_ros.export.manifest import Manifest

    export = tmp_path / "export"
    argv = [*SNAPFLOW, "export", recorded["teacher"], "--output", str(export)]
    assert _run(argv).returncode == 0
    previous = _hashes(export)
    sizes = {name: (export / name).stat().st_size for name in ("prefix.onnx", "expert.onnx")}
    limit = (min(sizes.values()) + max(sizes.values())) // 2  # the smaller graph fits, the larger does not
    failing = next(name for name, size in sizes.items() if size > limit)  # in the order they are written

    limited = _run(_limited(argv, limit))
    assert limited.returncode == 2
    assert limited.stderr.strip() == (f"snapflow export: error: cannot write {export / failing}: "
                                      f"OSError: [Errno 27] File too large")
    # The previous export as it was, loadable; no temporary sibling left.
    assert _hashes(export) == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    Manifest.read(export)
    for name in sizes:
        onnx.checker.check_model(str(export / name))


# --- 3. a bag deleted under a job --------------------------------------------------------------------

def _copies(recorded: dict, root: Path) -> list[Path]:
    return [Path(shutil.copytree(bag, root / Path(bag).name)) for bag in recorded["bags"]]


def test_bag_deleted_after_submission_fails_the_job_naming_the_bag(recorded, tmp_path):
    whole, one_file = _copies(recorded, tmp_path / "a"), _copies(recorded, tmp_path / "b")
    kept = _hashes(whole[0])
    queue = JobQueue()
    gone = queue.submit(_spec(recorded, tmp_path / "gone", bags=tuple(map(str, whole))))
    shutil.rmtree(whole[1])  # while the job starts up, before it reaches the bag
    emptied = queue.submit(_spec(recorded, tmp_path / "emptied", bags=tuple(map(str, one_file))))
    database = next(one_file[1].glob("*.db3"))
    database.unlink()  # the recording itself removed, metadata.yaml left (a deletion in progress)
    for job in (gone, emptied):
        _wait(job, lambda s: s.state.finished)
        assert job.status.state == JobState.FAILED
        assert not (Path(job.spec.output_dir) / "policy").exists()
        assert "Traceback" not in (Path(job.spec.output_dir) / JOB_LOG).read_text()
    assert gone.status.message == f"BagError: bag {whole[1]}: no such file or directory"
    assert emptied.status.message.startswith(f"BagError: bag {one_file[1]}: cannot open")
    assert _hashes(whole[0]) == kept


def test_bags_are_never_modified_and_one_deleted_after_it_was_read_does_not_matter(recorded, tmp_path):
    recorded_bag = Path(recorded["bags"][0])
    before = _hashes(recorded_bag)
    copy = Path(shutil.copytree(recorded["bags"][1], tmp_path / "copy"))
    job = JobQueue().submit(_spec(recorded, tmp_path / "run", bags=(str(recorded_bag), str(copy)), steps=40))
    _wait(job, lambda s: s.step > 0 or s.state.finished)
    shutil.rmtree(copy)  # read already: the job trains on what it loaded
    _wait(job, lambda s: s.state.finished)
    assert job.status.state == JobState.SUCCEEDED, job.status.message
    assert _hashes(recorded_bag) == before  # same files, same bytes: no journal, no -wal, no write


# --- 4. two jobs writing one output directory --------------------------------------------------------

@pytest.mark.ros
def test_a_job_for_the_output_dir_of_a_queued_or_running_one_is_refused(ros, recorded, tmp_path, tmp_root):
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from snapflow_interfaces.msg import DistillationStatus
    from snapflow_interfaces.srv import StartDistillation

    from snapflow_ros.ros.distillation_server import DistillationServer

    server = ros.node(DistillationServer, parameter_overrides=[Parameter("allowed_roots", value=[tmp_root])])
    probe = ros.node(Node, "probe")

    def start(output: Path | str, **fields):
        request = StartDistillation.Request(job=_job(recorded, output, **fields))
        return _call(ros, probe, StartDistillation, "/distillation_server/start_distillation", request)

    running = start(tmp_path / "a", steps=100_000)
    queued = start(tmp_path / "b")
    assert running.accepted and queued.accepted
    for output, other, state in ((tmp_path / "a", running, "running"), (tmp_path / "b", queued, "queued")):
        for named in (output, f"{output}/../{output.name}/."):  # the same directory, however it is named
            refused = start(named, seed=1)
            assert not refused.accepted
            assert (f"job: output_dir {output} is the output of job {other.job_id} ({state}); wait for it, "
                    f"cancel it or choose another directory") == refused.message
    assert set(server.service.queue.jobs) == {running.job_id, queued.job_id}
    # Once that job has ended, its directory is free again (it resumes there).
    job = server.service.queue.jobs[running.job_id]
    job.cancel()
    _wait(job, lambda s: s.state.finished, 30.0)
    assert start(tmp_path / "a").accepted
    assert server.service.queue.jobs[queued.job_id].status.state in (DistillationStatus.RUNNING,
                                                                     DistillationStatus.SUCCEEDED)


def test_two_distill_commands_on_one_output_dir_the_second_stops_naming_the_first(recorded, tmp_path):
    output = tmp_path / "run"
    argv = _distill(recorded, output, 100_000, "--log-every", "50")
    first = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60.0
        while lock_holder(output) is None and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        holder = f"pid {first.pid} (snapflow distill)"
        assert lock_holder(output) == holder
        assert json.loads((output / LOCK).read_text()) == {"pid": first.pid, "command": "snapflow distill"}
        started = time.monotonic()
        second = _run(argv, 120.0)
        reason = (f"output directory {output} is in use by another run: {holder}; wait for it to finish or "
                  f"choose another directory")
        assert second.returncode == 2
        assert second.stderr.strip() == f"snapflow distill: error: {reason}"
        assert _events(second.stdout) == [ErrorEvent("ConfigError", reason)]
        assert time.monotonic() - started < 60.0 and first.poll() is None  # refused before loading; first untouched
        # A job server, in this process, refuses it at submission too.
        with pytest.raises(ConfigError, match=re.escape(f"output_dir {output} is in use by another run: {holder}")):
            JobQueue().submit(_spec(recorded, output))
    finally:
        first.terminate()
        first.wait(30)
    assert first.returncode == 128 + signal.SIGTERM and not (output / "policy").exists()
    assert lock_holder(output) is None


def test_a_queued_job_whose_output_dir_another_run_took_fails_without_touching_it(recorded, tmp_path, monkeypatch):
    # Children that only sleep (no torch): the queue's bookkeeping is what is tested.
    monkeypatch.setattr(JobSpec, "command", lambda self: [sys.executable, "-c", "import time; time.sleep(60)"])
    queue = JobQueue()
    first = queue.submit(_spec(recorded, tmp_path / "first"))
    queued = queue.submit(_spec(recorded, tmp_path / "queued"))
    with output_lock(tmp_path / "queued", "snapflow distill", job="elsewhere"):  # another run, meanwhile
        holder = f"pid {os.getpid()} (snapflow distill, job elsewhere)"
        with pytest.raises(ConfigError, match=re.escape(f"output_dir {tmp_path / 'queued'} is in use by another "
                                                        f"run: {holder}")):
            queue.submit(_spec(recorded, tmp_path / "queued", seed=1))
        first.cancel()
        _wait(queued, lambda s: s.state.finished, 30.0)
        assert queued.status.state == JobState.FAILED and queued.process is None
        assert queued.status.message == (f"cannot start the job process: output_dir {tmp_path / 'queued'} is in "
                                         f"use by another run: {holder}; wait for it to finish or choose "
                                         f"another directory")
        assert not (tmp_path / "queued" / JOB_FILE).exists() and not (tmp_path / "queued" / JOB_LOG).exists()
    queue.cancel_all()


def test_shutting_down_the_queue_kills_a_job_that_ignores_sigterm(recorded, tmp_path, monkeypatch):
    ready = tmp_path / "ready"
    ignores = ("import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
               "pathlib.Path(sys.argv[1]).touch(); time.sleep(60)")
    monkeypatch.setattr(JobSpec, "command", lambda self: [sys.executable, "-c", ignores, str(ready)])
    queue = JobQueue()
    job = queue.submit(_spec(recorded, tmp_path / "stuck"))
    waiting = queue.submit(_spec(recorded, tmp_path / "waiting"))
    deadline = time.monotonic() + 30.0
    while not ready.exists() and time.monotonic() < deadline:  # SIGTERM ignored from then on
        time.sleep(0.02)
    started = time.monotonic()
    queue.cancel_all(wait_s=0.3)
    assert job.process.wait(5.0) == -signal.SIGKILL
    assert time.monotonic() - started < 2.0
    _wait(job, lambda s: s.state.finished, 10.0)
    assert job.status.state == JobState.CANCELLED
    assert waiting.status.state == JobState.CANCELLED and waiting.process is None  # never started
