"""`snapflow train-teacher / distill / eval / bench-distill` on the synthetic multi-modal task."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import save_small_student

SNAPFLOW = str(Path(sys.executable).parent / "snapflow")
SMALL = ["--samples", "512", "--holdout", "64", "--log-every", "50", "--checkpoint-every", "0"]


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([SNAPFLOW, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("command", ["train-teacher", "distill", "eval", "bench-distill"])
def test_help_explains_every_flag(command):
    import argparse

    from snapflow_ros.cli.main import build_parser

    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = subparsers.choices[command]
    assert parser.description
    undocumented = [a.option_strings or a.dest for a in parser._actions if not (a.help or "").strip()]
    assert not undocumented, f"{command}: flags without help: {undocumented}"
    result = _run(command, "--help")
    assert result.returncode == 0 and "--" in result.stdout


def test_distill_rejects_a_missing_teacher(tmp_path):
    result = _run("distill", str(tmp_path / "nope"), "--output", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "nope: not a checkpoint directory (config.json missing)" in result.stderr


def test_eval_rejects_a_corrupt_checkpoint(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"type": "bulitin"}')
    result = _run("eval", str(tmp_path / "bad"))
    assert result.returncode == 2
    assert "unknown policy type 'bulitin' (did you mean 'builtin'?)" in result.stderr


@pytest.mark.slow
def test_bench_distill_student_beats_naive_one_step(tmp_path):
    report_path = tmp_path / "report.json"
    result = _run("bench-distill", "--workdir", str(tmp_path), "--json", str(report_path),
                  "--teacher-steps", "400", "--student-steps", "300", "--latency-repeats", "5", *SMALL)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "distill: step 300/300" in result.stderr  # progress lines with rate and ETA
    report = json.loads(report_path.read_text())
    r = report["results"]
    assert set(r) == {"teacher@10", "teacher@1", "student@1"}
    assert r["teacher@10"]["mse_vs_teacher@10"] == 0.0
    # The student moved toward the 10-step teacher and away from the naive average.
    assert r["student@1"]["mse_vs_teacher@10"] < r["teacher@1"]["mse_vs_teacher@10"]
    assert "latency_ratio_teacher10_over_student1" in report  # timings are the benchmark's, not asserted
    assert report["seeds"] == {"train": 0, "data": 0, "noise": 0}
    provenance = json.loads((tmp_path / "student" / "policy" / "provenance.json").read_text())
    assert provenance["objective"] == "snapflow" and provenance["teacher_id"].startswith("policy@")
    assert provenance["final_metrics"]["step"] == 300 and provenance["train_samples"] == 512
    assert (tmp_path / "student" / "metrics.jsonl").read_text().count("\n") >= 6


def test_train_flags_reach_the_train_config():
    from snapflow_ros.cli.main import build_parser
    from snapflow_ros.cli.options import train_config

    args = build_parser().parse_args(["distill", "teacher", "--output", "run", "--keep-checkpoints", "0",
                                      "--workers", "3"])
    config = train_config(args, "snapflow")
    assert (config.keep_checkpoints, config.workers) == (0, 3)
    defaults = train_config(build_parser().parse_args(["distill", "teacher", "--output", "run"]), "snapflow")
    assert (defaults.keep_checkpoints, defaults.workers) == (2, 0)


def test_eval_samples_in_batches_on_the_given_device(tmp_path):
    teacher = save_small_student(tmp_path / "teacher")
    report_path = tmp_path / "report.json"
    result = _run("eval", str(teacher), "--samples", "16", "--holdout", "12", "--batch-size", "5",
                  "--device", "cpu", "--latency-repeats", "1", "--json", str(report_path))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert (report["batch_size"], report["device"], report["samples"]) == (5, "cpu", 12)
    assert report["valid_action_positions"] == 12 * 8
    assert set(report["results"]) == {"teacher@10", "teacher@1"}


def test_train_teacher_builds_the_size_asked_for(tmp_path):
    """--width / --layers: the capacity of the built-in teacher (its students inherit it)."""
    result = _run("train-teacher", "--output", str(tmp_path / "t"), "--steps", "2", "--batch-size", "8",
                  "--width", "32", "--layers", "1", "--samples", "32", "--holdout", "8", "--checkpoint-every", "0",
                  "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((tmp_path / "t" / "policy" / "config.json").read_text())
    assert (config["width"], config["num_layers"]) == (32, 1)
