"""Distillation jobs in their own process (no ROS): a job writes a loadable student, reports
progress, queues behind a running one, cancels without leaving anything loadable, and fails with
the bag and topic named when the bags do not fit."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from snapflow_distill.jobs import JOB_LOG, DistillCommand, JobProcess, JobQueue, JobSpec, JobState
from snapflow_ros.errors import ConfigError
from snapflow_ros.events import DoneEvent, ErrorEvent, ProgressEvent, parse_line, to_line


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
    from snapflow_ros.families.registry import load_policy
    from snapflow_ros.files import checkpoint_id, read_config

    updates = []
    queue = JobQueue(on_update=updates.append)
    open_fds = len(os.listdir("/proc/self/fd"))
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
    assert second.finished.wait(10.0)
    assert len(os.listdir("/proc/self/fd")) == open_fds  # finished jobs stay listed, their pipes closed


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


def test_job_command_maps_every_field_to_the_distill_argument_of_that_name(tmp_path):
    from snapflow_ros.cli.main import build_parser

    spec = JobSpec(bags=("b1", "b2"), teacher="t", output_dir=str(tmp_path / "out"), dataset_config="d.yaml",
                   steps=40, learning_rate=1e-05, alpha=0.3, seed=7, device="cpu")
    command = DistillCommand.for_job(spec)
    argv = command.argv()
    assert argv[1:4] == ["-m", "snapflow_ros.cli.main", "distill"]
    args = build_parser().parse_args(argv[3:])
    assert args.command == "distill" and args.teacher == Path("t")
    assert args.bags == [Path("b1"), Path("b2")] and args.bag_config == Path("d.yaml")
    assert args.output == tmp_path / "out" and args.holdout_episodes == 0 and args.progress_format == "json"
    assert (args.steps, args.lr, args.alpha, args.seed, args.device, args.log_every) == (40, 1e-05, 0.3, 7, "cpu", 2)
    defaults = build_parser().parse_args(["distill", "t", "--output", "o"])
    # 0 in the job message: the command's own default, not 0.
    assert args.batch_size == defaults.batch_size and args.consistency_weight == defaults.consistency_weight


def test_event_lines_round_trip_and_anything_else_is_ignored():
    progress = ProgressEvent(3, 10, float("nan"), 0.5, 0.25, 1e-3, 2.0, 3.5)
    parsed = parse_line(to_line(progress))
    assert parsed.step == 3 and parsed.eta_seconds == 3.5 and parsed.loss != parsed.loss  # NaN kept
    assert "NaN" not in to_line(progress)  # strict JSON on the wire
    assert parse_line(to_line(DoneEvent(student="s/policy"))) == DoneEvent(student="s/policy")
    error = ErrorEvent("BagError", "bag x: no messages\non two lines")
    assert parse_line(to_line(error)) == error and "\n" not in to_line(error)  # one line, whatever the message
    for line in ("student written to x", "{", "[1, 2]", "3", "null", '"text"', '{"step": 1}',
                 '{"event": "later-kind"}', '{"event": "progress", "step": "one"}',
                 '{"event": "progress", "step": true, "total_steps": 1}', '{"event": "error"}', "\ufffd\x00"):
        assert parse_line(line) is None, line


def test_a_failing_child_reports_its_reason_on_the_json_channel(recorded, tmp_path):
    missing = tmp_path / "no_such_bag"
    # Past the parent's checks (the bag vanished after submission): the child finds out and says so.
    job = JobProcess(_spec(recorded, tmp_path / "run", bags=(str(missing),)))
    job.start()
    assert job.finished.wait(120.0), job.status
    assert job.status.state == JobState.FAILED
    assert job.status.message.startswith("BagError: ") and str(missing) in job.status.message
    assert str(missing) in (tmp_path / "run" / JOB_LOG).read_text()  # the human line, kept for humans
    assert not (tmp_path / "run" / "policy").exists()


def test_garbage_on_the_childs_stdout_does_not_break_the_parsing(tmp_path, monkeypatch):
    script = tmp_path / "child.py"
    progress = to_line(ProgressEvent(5, 10, 0.5, 0.4, 0.1, 1e-3, 20.0, 0.25))
    script.write_text(
        "import sys\n"
        "print('loading teacher... {not json')\n"
        "sys.stdout.flush(); sys.stdout.buffer.write(b'\\xff\\xfe binary\\n'); sys.stdout.buffer.flush()\n"
        f"print({progress!r})\n"
        "print('[1, 2, 3]'); print('{\"event\": \"progress\"}'); print('{\"event\": \"unknown\"}')\n"
        f"print({to_line(ErrorEvent('FloatingPointError', 'loss became nan at step 6'))!r})\n"
        "print('a traceback, for humans', file=sys.stderr)\n"
        "sys.exit(1)\n")
    monkeypatch.setattr(JobSpec, "command", lambda self: [sys.executable, str(script)])
    updates = []
    job = JobProcess(JobSpec(bags=("b",), teacher="t", output_dir=str(tmp_path / "run"), dataset_config="d"),
                     on_update=updates.append)
    job.start()
    assert job.finished.wait(60.0), job.status
    assert job.status.state == JobState.FAILED
    assert job.status.message == "FloatingPointError: loss became nan at step 6"
    assert [u.step for u in updates if u.step] and job.status.step == 5 and job.status.total_steps == 10
    assert "a traceback, for humans" in (tmp_path / "run" / JOB_LOG).read_text()


def test_a_child_that_dies_without_an_error_line_is_reported_with_its_log(tmp_path, monkeypatch):
    monkeypatch.setattr(JobSpec, "command", lambda self: [sys.executable, "-c", "import os; os._exit(3)"])
    job = JobProcess(JobSpec(bags=("b",), teacher="t", output_dir=str(tmp_path / "run"), dataset_config="d"))
    job.start()
    assert job.finished.wait(60.0)
    assert job.status.state == JobState.FAILED
    assert job.status.message == (f"job process exited with code 3 and reported no error "
                                  f"(its stderr: {tmp_path / 'run' / JOB_LOG})")
