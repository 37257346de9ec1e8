"""snapflow soak: the summary's arithmetic (timer ticks, gaps, holds, slopes, checks) on made-up records, and a
one-minute smoke of the real command (node process, sensors, swaps, a job, holds; CI runs it;
no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from snapflow_ros.runtime.soak_report import SoakRecord, summarise, timer_slots


def _record(**changes) -> SoakRecord:
    record = SoakRecord(duration_s=120.0, chunk_rate_hz=10.0, warmup_s=30.0,
                        chunks=[(t / 10, 2.0, 20.0) for t in range(1200)],
                        process=[(float(t), 500.0, 20) for t in range(120)],
                        swaps=[{"at_s": 30.0, "completed_after_s": 0.2}], jobs=[{"job_id": "a", "state": "SUCCEEDED"}])
    for name, value in changes.items():
        setattr(record, name, value)
    return record


def test_a_steady_run_passes_every_check():
    report = summarise(_record())
    assert report["chunks"]["missed_outside_holds"] == 0 and report["chunks"]["expected_outside_holds"] == 1200
    assert report["passed"] and all(v is not False for v in report["checks"].values())
    assert [m["chunks"] for m in report["per_minute"]] == [600, 600]


def test_gaps_count_as_missed_unless_a_hold_explains_them():
    chunks = [(t / 10, 2.0, 20.0) for t in range(1200) if not 500 <= t < 510]  # 1 s without chunks at 50 s
    report = summarise(_record(chunks=chunks))
    assert report["chunks"]["missed_outside_holds"] == 10 and not report["checks"]["no_missed_chunks_outside_holds"]
    assert report["chunks"]["longest_gap_outside_holds_s"] == pytest.approx(1.1)
    held = summarise(_record(chunks=chunks, holds=[(49.95, 51.0)]))
    assert held["chunks"]["missed_outside_holds"] == 0 and held["passed"]
    assert held["chunks"]["expected_outside_holds"] == round((120 - 1.05) * 10)
    assert not summarise(_record(holds=[(49.95, 51.0)]))["checks"]["nothing_published_while_held"]


def test_a_late_chunk_answers_its_own_tick_and_a_skipped_tick_is_missed_despite_jitter():
    rng = np.random.default_rng(0)
    jitter = rng.uniform(0.005, 0.03, 1200)  # inference + transport after each tick
    on_time = [(t / 10 + jitter[t], 2.0, 20.0) for t in range(1200)]
    late = [(t + (0.074 if i in (300, 900) else 0.0), *rest) for i, (t, *rest) in enumerate(on_time)]
    report = summarise(_record(chunks=late))
    assert report["chunks"]["missed_outside_holds"] == 0 and report["passed"]
    assert report["chunks"]["late_outside_holds"] == 2
    assert report["chunks"]["max_lateness_outside_holds_s"] == pytest.approx(0.074, abs=0.03)
    # One tick skipped, its neighbours early and late: gaps of 1.5 to 2.3 periods either way.
    skipped = [c for i, c in enumerate(late) if i != 600]
    report = summarise(_record(chunks=skipped))
    assert report["chunks"]["missed_outside_holds"] == 1 and not report["passed"]
    assert timer_slots([0.01, 0.13, 0.21, 0.41], 0.1)[0] == [0, 1, 2, 4]


def test_memory_growth_fd_leaks_and_unfinished_work_fail():
    growing = [(float(t), 500.0 + t * 0.01, 20) for t in range(120)]  # 6 MB per 10 min
    assert summarise(_record(process=growing))["process"]["rss_slope_mb_per_10_min"] == pytest.approx(6.0)
    assert not summarise(_record(process=growing))["passed"]
    leaking = [(float(t), 500.0, 20 + t // 10) for t in range(120)]
    assert not summarise(_record(process=leaking))["checks"]["open_fds_flat"]
    assert not summarise(_record(swaps=[{"at_s": 30.0, "completed_after_s": None}]))["passed"]
    assert not summarise(_record(jobs=[{"job_id": "a", "state": "FAILED"}]))["passed"]
    assert not summarise(_record(errors=["policy_node logged: boom"]))["passed"]


@pytest.mark.slow
@pytest.mark.ros
def test_soak_smoke_runs_the_node_with_swaps_a_job_and_holds(tmp_path):
    workdir = tmp_path / "soak"
    done = subprocess.run([sys.executable, "-m", "snapflow_ros.cli.main", "soak", "--minutes", "1", "--workdir",
                           str(workdir), "--job-steps", "30", "--hold-every", "30", "--warmup-minutes", "0.2"],
                          capture_output=True, text=True, timeout=600)
    report = json.loads((workdir / "report.json").read_text())
    assert report["chunks"]["published"] > 0 and report["chunks"]["published_while_held"] == 0
    assert report["swaps"]["requested"] >= 1 and report["swaps"]["completed"] == report["swaps"]["requested"]
    assert report["jobs"]["started"] == 1 and report["jobs"]["succeeded"] == 1
    assert report["holds"] >= 1 and len(report["per_minute"]) == 1
    assert report["errors"] == [], report["errors"]
    assert report["node_exit_code"] == 0
    assert (workdir / "report.svg").read_text().startswith("<svg")
    assert done.returncode in (0, 1), done.stderr  # 1: a timing or memory check failed on a busy machine
