"""snapflow sim-table end to end at toy size: three seeds, each recorded, trained, distilled and
evaluated; the report's per-seed outcomes, intervals and paired tests; a rerun reuses every cached
stage and reproduces the table."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_sim_table_over_three_seeds_is_cached_and_reproducible(tmp_path):
    command = [sys.executable, "-m", "snapflow_ros.cli.main", "sim-table", "--workdir", str(tmp_path),
               "--tasks", "reach-either", "--seeds", "0", "1", "2", "--demo-episodes", "2", "--teacher-steps", "10",
               "--student-steps", "5", "--batch-size", "8", "--episodes", "2", "--resamples", "100"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert first.returncode == 0, first.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    task = report["tasks"]["reach-either"]
    assert task["seeds"] == 3 and task["episodes_per_seed"] == 2
    assert set(task["policies"]) == {"teacher@10", "teacher@2", "teacher@1", "student@1"}
    for row in task["policies"].values():
        assert len(row["per_seed"]) == 3 and row["episodes"] == 6
        assert row["pooled_ci95"][0] <= row["pooled_rate"] <= row["pooled_ci95"][1]
    assert [(c["a"], c["b"]) for c in task["comparisons"]] == [("student@1", "teacher@1"), ("student@1", "teacher@10")]
    assert report["multimodal"] == {"reach-either": True}
    assert "| reach-either | student@1 vs teacher@1 |" in (tmp_path / "table.md").read_text()
    # Independent seeds: each trains its own teacher.
    teachers = {(tmp_path / f"seed-{seed}" / "teacher" / "policy" / "model.safetensors").read_bytes()
                for seed in range(3)}
    assert len(teachers) == 3

    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("cached") == 3 * 4  # bags, teacher, student and evaluation of every seed
    assert again.stderr.count("4 of 4 rows cached") == 3
    rerun = json.loads((tmp_path / "report.json").read_text())
    assert rerun["tasks"] == report["tasks"]

    # A student of other settings: distilled and evaluated alone, beside the first one, against the
    # same recordings, teacher and teacher rows; its report goes where --report-dir says.
    other = subprocess.run([*command, "--student-steps", "6", "--consistency-weight", "1",
                            "--report-dir", str(tmp_path / "other")], capture_output=True, text=True, timeout=600)
    assert other.returncode == 0, other.stderr[-3000:]
    assert other.stderr.count("3 of 4 rows cached") == 3 and other.stderr.count("SnapFlow for 6 steps") == 3
    assert (tmp_path / "seed-0" / report["student"]).is_dir()  # the first student stays
    studied = json.loads((tmp_path / "other" / "report.json").read_text())
    assert studied["student"] == "student-6steps-lr0.001-lambda1" != report["student"]
    for name in ("teacher@10", "teacher@2", "teacher@1"):
        assert studied["tasks"]["reach-either"]["policies"][name] == task["policies"][name]
