"""Distillation jobs in their own process (no ROS): a job writes a loadable student, reports
progress, queues behind a running one, cancels without leaving anything loadable, and fails with
the bag and topic named when the bags do not fit."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from snapflow_distill.jobs import JobQueue, JobSpec, JobState
from snapflow_ros.errors import ConfigError


def _spec(recorded: dict, output: Path, **changes) -> JobSpec:
    values = dict(bags=tuple(recorded["bags"]), teacher=recorded["teacher"], output_dir=str(output),
                  dataset_config=recorded["config"], steps=20, batch_size=8) | changes
    return JobSpec(**values)


def _wait(job, condition, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition(job.status) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert condition(job.status), job.status


def test_job_writes_a_student_and_reports_progress_while_the_next_waits(recorded, tmp_path):
    from snapflow_ros.policy.checkpoint import checkpoint_id, load_policy, read_config

    updates = []
    queue = JobQueue(on_update=updates.append)
    first = queue.submit(_spec(recorded, tmp_path / "first"))
    second = queue.submit(_spec(recorded, tmp_path / "second", steps=10, seed=1))
    assert first.status.state == JobState.RUNNING and second.status.state == JobState.QUEUED
    _wait(first, lambda s: s.state.finished)
    assert first.status.state == JobState.SUCCEEDED, first.status.message
    student = Path(first.status.student_checkpoint)
    assert student == tmp_path / "first" / "policy"
    policy = load_policy(student)
    assert policy.chunk_size == 6 and checkpoint_id(student) != checkpoint_id(Path(recorded["teacher"]))
    provenance = json.loads((student / "provenance.json").read_text())
    assert provenance["bags"] == list(recorded["bags"]) and provenance["objective"] == "snapflow"
    assert read_config(student)["type"] == "builtin"
    progress = [u for u in updates if u.job_id == first.job_id and u.state == JobState.RUNNING and u.step]
    assert progress and progress[-1].step == 20 and progress[-1].steps_per_second > 0
    assert all(a.step <= b.step for a, b in zip(progress, progress[1:]))
    assert json.loads((tmp_path / "first" / "job.json").read_text())["job_id"] == first.job_id
    _wait(second, lambda s: s.state.finished)  # started once the first finished
    assert second.status.state == JobState.SUCCEEDED


def test_cancelled_job_leaves_nothing_loadable(recorded, tmp_path):
    queue = JobQueue()
    job = queue.submit(_spec(recorded, tmp_path / "run", steps=100_000))
    _wait(job, lambda s: s.step > 0)
    assert job.cancel()
    _wait(job, lambda s: s.state.finished, 30.0)
    assert job.status.state == JobState.CANCELLED and not job.status.student_checkpoint
    leftovers = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert "policy" not in leftovers and not [n for n in leftovers if ".tmp-" in n], leftovers
    assert not job.cancel()  # already finished


def test_bags_missing_a_topic_fail_the_job_naming_bag_and_topic(recorded, tmp_path):
    config = tmp_path / "wrist.yaml"
    recorded["spec"].dataset_config(cameras={"front": "/camera/wrist/image_raw"}).write_yaml(config)
    job = JobQueue().submit(_spec(recorded, tmp_path / "run", dataset_config=str(config)))
    _wait(job, lambda s: s.state.finished)
    assert job.status.state == JobState.FAILED
    assert f"bag {recorded['bags'][0]}: topic /camera/wrist/image_raw not found" in job.status.message
    assert not (tmp_path / "run" / "policy").exists()


def test_bags_that_do_not_fit_the_teacher_fail_the_job(recorded, tmp_path):
    config = tmp_path / "one_joint.yaml"
    recorded["spec"].dataset_config(joint_names=("hand_x",), action_names=("hand_x", "hand_y")).write_yaml(config)
    job = JobQueue().submit(_spec(recorded, tmp_path / "run", dataset_config=str(config)))
    _wait(job, lambda s: s.state.finished)
    assert job.status.state == JobState.FAILED
    assert "the data does not fit the teacher: state_dim: teacher 2, data 1" in job.status.message


def test_jobs_that_cannot_run_are_refused_before_a_process_starts(recorded, tmp_path):
    queue = JobQueue()
    with pytest.raises(ConfigError, match=r"teacher_checkpoint .* \(config.json missing\)"):
        queue.submit(_spec(recorded, tmp_path / "a", teacher=str(tmp_path)))
    with pytest.raises(ConfigError, match=r"bag_paths \[.*nope.*\] do not exist"):
        queue.submit(_spec(recorded, tmp_path / "a", bags=(str(tmp_path / "nope"),)))
    (tmp_path / "done" / "policy").mkdir(parents=True)
    with pytest.raises(ConfigError, match="already holds a student"):
        queue.submit(_spec(recorded, tmp_path / "done"))
    assert not queue.jobs
