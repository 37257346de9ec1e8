"""`snapflow ablate` and snapflow_distill.ablation: the variants are the paper's (each setting once),
"without phi" keeps phi exactly zero and still checkpoints and resumes, alpha 1 / alpha 0 route no
sample to consistency / flow matching, and one tiny CLI run reports every variant in JSON and table."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from conftest import tiny_synthetic_policy
from snapflow_distill.ablation import (
    METRIC_COLUMNS,
    PAPER_VARIANTS,
    Column,
    Variant,
    check_variants,
    finished_run,
    markdown_table,
    ranks,
    spearman,
)
from snapflow_distill.synthetic import make_dataset
from snapflow_distill.trainer import STATE, TrainConfig, Trainer
from snapflow_ros.errors import ConfigError
from snapflow_ros.families.registry import load_policy
from snapflow_ros.files import save_policy

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data():
    return make_dataset(48, seed=3)[0]


def _phi(policy) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in policy.target_time.state_dict().items()}


def _config(**overrides) -> TrainConfig:
    return TrainConfig(**{"objective": "snapflow", "steps": 4, "batch_size": 8, "warmup_steps": 1,
                          "checkpoint_every": 2, "log_every": 1, **overrides})


# --- the variant list ----------------------------------------------------------------------
def test_paper_variants_are_the_ablation_with_each_setting_once():
    check_variants(PAPER_VARIANTS)
    settings = {v.setting() for v in PAPER_VARIANTS}
    assert len(settings) == len(PAPER_VARIANTS) == 8
    assert {v.alpha for v in PAPER_VARIANTS if v.consistency_weight == 0.1 and v.train_target_time} == {
        0.0, 0.3, 0.5, 0.7, 1.0}
    assert {v.consistency_weight for v in PAPER_VARIANTS if v.alpha == 0.5 and v.train_target_time} == {
        0.01, 0.1, 1.0}
    assert [v.setting() for v in PAPER_VARIANTS if not v.train_target_time] == [(0.5, 0.1, False)]
    # The notes' numbers (snapflow-method.md, "Ablation (offline MSE)").
    assert {v.name: v.paper_mse for v in PAPER_VARIANTS} == {
        "alpha 0": 0.0115, "alpha 0.3": 0.0088, "default": 0.0077, "alpha 0.7": 0.0084,
        "alpha 1": 0.0093, "lambda 0.01": 0.0089, "lambda 1": 0.0096, "without phi": 0.0098}


@pytest.mark.parametrize("variants, match", [
    ((Variant("a", 0.5, 0.1), Variant("b", 0.5, 0.1)), "setting"),          # the same run twice
    ((Variant("a", 0.5, 0.1), Variant("a", 0.3, 0.1)), "name"),
    ((Variant("x y", 0.5, 0.1), Variant("x-y", 0.3, 0.1)), "directory"),   # one run directory
    ((Variant("teacher@1", 0.5, 0.1),), "reserved"),
    ((Variant("a", 1.5, 0.1),), "alpha"),
    ((), "at least one"),
])
def test_check_variants_refuses_what_would_collide(variants, match):
    with pytest.raises(ConfigError, match=match):
        check_variants(variants)


def test_variant_config_changes_the_loss_setting_only():
    base = TrainConfig(steps=7, seed=3, learning_rate=5e-4, alpha=0.9)
    config = Variant("without phi", 0.5, 0.1, train_target_time=False).config(base)
    assert (config.alpha, config.consistency_weight, config.train_target_time) == (0.5, 0.1, False)
    assert replace(config, alpha=0.9, train_target_time=True) == base


def test_ranks_and_spearman():
    assert ranks([0.3, 0.1, 0.2, 0.1]) == [4.0, 1.5, 3.0, 1.5]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2], [1, 2]) is None and spearman([1, 1, 1], [1, 2, 3]) is None


def test_table_shows_a_dash_for_missing_metrics_and_takes_extra_columns():
    """The closed-loop hook: a caller adds a metric per row and a Column for it."""
    row = {"mse_vs_teacher@10": 0.02, "mse_vs_ground_truth": 0.1}
    report = {"samples": 4, "noise_seed": 0,
              "results": {"teacher@10": row, "teacher@1": row, "v": row | {"closed_loop_success": 0.75}},
              "variants": [{"name": "v", "alpha": 0.5, "consistency_weight": 0.1, "train_target_time": False,
                            "paper_mse": 0.0098}],
              "ordering_vs_paper": {"metric": "mse_vs_teacher@10", "ours": {"v": 1.0}, "paper": {"v": 1.0},
                                    "spearman": {}}}
    table = markdown_table(report, (*METRIC_COLUMNS, Column("closed-loop success", "closed_loop_success",
                                                            "{:.1%}")))
    line = next(line_ for line_ in table.splitlines() if line_.startswith("| student@1 v "))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells == ["student@1 v", "0.5", "0.1", "zero", "0.02", "0.1", "—", "—", "75.0%", "0.0098", "1 / 1"]
    assert "| teacher@1 |" in table and "closed-loop success" in table.splitlines()[0]


# --- without phi: zero, untrained, checkpointed, resumable ---------------------------------
def test_without_phi_keeps_phi_exactly_zero_and_trains_the_rest(data, tmp_path):
    policy = tiny_synthetic_policy(data)
    phi_before = _phi(policy)
    rest_before = {n: p.detach().clone() for n, p in policy.named_parameters()
                   if n.startswith(("action_", "expert_")) and p.requires_grad}
    trainer = Trainer(policy, data, _config(train_target_time=False), tmp_path)
    final = trainer.run()
    assert not any(p.requires_grad for p in policy.target_time.parameters())
    assert all(torch.equal(phi_before[k], v) for k, v in _phi(policy).items())
    assert torch.count_nonzero(policy.target_time.linear_out.weight) == 0
    after = dict(policy.named_parameters())
    assert all(not torch.equal(rest_before[n], after[n]) for n in rest_before), "the expert must train"
    # The saved student: phi still zero, so s changes nothing.
    loaded = load_policy(final)
    assert not loaded.target_time.is_trained()
    # The contrast, so the checks above can fail: the default trains phi away from zero.
    trained = tiny_synthetic_policy(data)
    Trainer(trained, data, _config(), tmp_path / "with-phi").run()
    assert trained.target_time.is_trained()


def test_without_phi_resumes_bit_for_bit(data, tmp_path):
    config = _config(steps=5, train_target_time=False)
    straight = Trainer(tiny_synthetic_policy(data), data, config, tmp_path / "straight").run()

    class Crash(Exception):
        pass

    def crash_at_step_3(progress):
        if progress.step == 3:
            raise Crash

    with pytest.raises(Crash):
        Trainer(tiny_synthetic_policy(data), data, config, tmp_path / "resumed", progress=crash_at_step_3).run()
    checkpoint = tmp_path / "resumed" / "checkpoints" / "step-00000002"
    assert checkpoint.is_dir()
    from safetensors.torch import load_file

    assert not any(k.startswith("target_time.") for k in load_file(checkpoint / "policy.safetensors"))
    resumed = Trainer(tiny_synthetic_policy(data), data, config, tmp_path / "resumed").run()
    a, b = load_policy(straight).state_dict(), load_policy(resumed).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_from_before_the_field_resumes_as_phi_trained(data, tmp_path):
    Trainer(tiny_synthetic_policy(data), data, _config(steps=3), tmp_path).run()
    state_path = tmp_path / "checkpoints" / "step-00000002" / STATE
    state = json.loads(state_path.read_text())
    del state["train_config"]["train_target_time"]  # as written before the field existed
    state_path.write_text(json.dumps(state))
    assert Trainer(tiny_synthetic_policy(data), data, _config(steps=3), tmp_path).resume()
    with pytest.raises(ConfigError, match="train_target_time"):
        Trainer(tiny_synthetic_policy(data), data, _config(steps=3, train_target_time=False), tmp_path).resume()


def test_finished_run_matches_config_and_provenance(data, tmp_path):
    config = _config(steps=2, checkpoint_every=0)
    trainer = Trainer(tiny_synthetic_policy(data), data, config, tmp_path)
    trainer.provenance |= {"teacher_id": "t@1"}
    final = trainer.run()
    assert finished_run(final, config, {"teacher_id": "t@1"})
    assert finished_run(final, replace(config, workers=1), {"teacher_id": "t@1"})  # execution only
    assert not finished_run(final, replace(config, steps=3), {"teacher_id": "t@1"})
    assert not finished_run(final, replace(config, alpha=0.3), {"teacher_id": "t@1"})
    assert not finished_run(final, config, {"teacher_id": "t@2"})
    assert not finished_run(tmp_path / "nothing", config, {})


# --- the command, tiny ---------------------------------------------------------------------
TINY = ["--teacher-steps", "12", "--student-steps", "4", "--batch-size", "16", "--samples", "96",
        "--holdout", "24", "--log-every", "1", "--latency-repeats", "1", "--eval-batch-size", "24",
        "--device", "cpu"]


def _snapflow(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "snapflow_ros.cli.main", "ablate", *args],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("ablate")
    result = _snapflow("--workdir", str(work), *TINY)
    return {"work": work, "stdout": result.stdout, "stderr": result.stderr,
            "report": json.loads((work / "report.json").read_text()),
            "table": (work / "table.md").read_text()}


def _metrics_rows(work: Path, variant: str) -> list[dict]:
    lines = (work / "students" / variant / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.slow
def test_tiny_run_reports_every_variant_in_json_and_table(tiny_run):
    report, table = tiny_run["report"], tiny_run["table"]
    assert json.loads(tiny_run["stdout"]) == report  # stdout is the report and nothing else
    assert table in tiny_run["stderr"]
    names = [v.name for v in PAPER_VARIANTS]
    assert [v["name"] for v in report["variants"]] == names
    assert set(report["results"]) == {"teacher@10", "teacher@1", *names}
    # Eight runs, the default (alpha 0.5, lambda 0.1) once.
    students = {Path(v["student"]) for v in report["variants"]}
    assert len(students) == 8 and all((p / "config.json").is_file() for p in students)
    assert sorted(p.name for p in (tiny_run["work"] / "students").iterdir()) == sorted(
        v.directory for v in PAPER_VARIANTS)
    assert report["teacher_source"] == "trained" and report["steps"] == {"teacher": 12, "student": 4}
    assert report["samples"] == 24
    for name, row in report["results"].items():
        for key in ("mse_vs_teacher@10", "mse_vs_ground_truth", "mse_to_nearest_expert_route"):
            assert math.isfinite(row[key]) and row[key] >= 0, (name, key)
        assert 0 <= row["obstacle_hit_rate"] <= 1
        # One of the two routes is the ground truth: the nearest route is never farther.
        assert row["mse_to_nearest_expert_route"] <= row["mse_vs_ground_truth"] + 1e-6, name
        assert row["steps"] == (10 if name == "teacher@10" else 1)
    assert report["results"]["teacher@10"]["mse_vs_teacher@10"] == 0
    assert report["results"]["teacher@1"]["mse_vs_teacher@10"] > 0
    rows = [line for line in table.splitlines() if line.startswith("| teacher@") or line.startswith("| student@1")]
    assert len(rows) == 10
    for v in PAPER_VARIANTS:
        line = next(r for r in rows if r.startswith(f"| student@1 {v.name} |"))
        assert f"{v.paper_mse:.4f}" in line and ("zero" in line) == (not v.train_target_time)
    assert "paper" in table.lower() and "LIBERO" in table
    assert set(report["ordering_vs_paper"]["spearman"]) == {
        "mse_vs_teacher@10", "mse_vs_ground_truth", "mse_to_nearest_expert_route"}


@pytest.mark.slow
def test_tiny_run_routes_alpha_0_and_1_to_one_loss_only(tiny_run):
    work = tiny_run["work"]
    only_fm, only_sd, both = (_metrics_rows(work, d) for d in ("alpha-1", "alpha-0", "default"))
    assert len(only_fm) == len(only_sd) == 4
    assert all(r["loss_consistency"] == 0 and r["loss_flow_matching"] > 0 for r in only_fm)
    assert all(r["loss_flow_matching"] == 0 and r["loss_consistency"] > 0 for r in only_sd)
    assert all(r["loss_flow_matching"] > 0 and r["loss_consistency"] > 0 for r in both)


@pytest.mark.slow
def test_tiny_run_without_phi_student_keeps_phi_zero(tiny_run):
    by_name = {v["name"]: v["student"] for v in tiny_run["report"]["variants"]}
    teacher = load_policy(Path(tiny_run["report"]["teacher"]))
    assert not teacher.target_time.is_trained()
    without = load_policy(Path(by_name["without phi"]))
    assert not without.target_time.is_trained()
    assert all(torch.equal(a, b) for a, b in zip(without.target_time.state_dict().values(),
                                                 teacher.target_time.state_dict().values()))
    assert load_policy(Path(by_name["default"])).target_time.is_trained()


@pytest.mark.slow
@pytest.mark.parametrize("teacher, source", [(False, "reused"), (True, "given")])
def test_rerun_reuses_the_finished_teacher_and_students(tiny_run, tmp_path, teacher, source):
    work = tiny_run["work"]
    runs = [work / "teacher", *(work / "students").iterdir()]
    before = {d.name: (d / "metrics.jsonl").read_text() for d in runs}
    report_path = tmp_path / "again.json"
    given = ["--teacher", tiny_run["report"]["teacher"]] if teacher else []
    _snapflow("--workdir", str(work), *given, "--json", str(report_path), "--table", str(tmp_path / "again.md"),
              *TINY)
    again = json.loads(report_path.read_text())
    assert again["teacher_source"] == source
    assert {d.name: (d / "metrics.jsonl").read_text() for d in runs} == before  # nothing retrained
    first = tiny_run["report"]["results"]
    for name, row in again["results"].items():
        assert row["mse_vs_teacher@10"] == first[name]["mse_vs_teacher@10"], name


def test_missing_held_out_data_is_a_config_error(tmp_path):
    teacher = save_policy(tiny_synthetic_policy(make_dataset(8, seed=0)[0]), tmp_path / "teacher")
    result = subprocess.run([sys.executable, "-m", "snapflow_ros.cli.main", "ablate", "--teacher", str(teacher),
                             "--workdir", str(tmp_path), "--holdout", "0", "--samples", "16", "--device", "cpu"],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2 and "holdout" in result.stderr


def test_closed_loop_needs_recordings_of_the_task(tmp_path):
    result = subprocess.run([sys.executable, "-m", "snapflow_ros.cli.main", "ablate", "--workdir", str(tmp_path),
                             "--closed-loop-task", "reach-either", "--device", "cpu"],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2 and "--closed-loop-task reach-either needs" in result.stderr


@pytest.mark.slow
def test_closed_loop_column_runs_every_row_on_the_same_episodes(tmp_path):
    """sim-record reach-either -> ablate on its bags with --closed-loop-task: every row (teacher@10,
    naive@1, each variant) gets a success rate, a Wilson interval and a McNemar p against naive@1."""
    from snapflow_ros.bags.config import BagDatasetConfig
    from snapflow_ros.sim.topics import sim_bag_config

    bag, config = tmp_path / "bag", tmp_path / "bag_dataset.yaml"
    record = subprocess.run([sys.executable, "-m", "snapflow_ros.cli.main", "sim-record", "--task", "reach-either",
                             "--episodes", "3", "--output", str(bag), "--rate-hz", "50", "--bag-config", str(config)],
                            capture_output=True, text=True, cwd=REPO, timeout=600)
    assert record.returncode == 0, record.stderr[-3000:]
    assert BagDatasetConfig.from_yaml(config) == sim_bag_config(50.0)  # sim-record wrote the config that reads it
    work = tmp_path / "ablate"
    _snapflow("--workdir", str(work), "--bags", str(bag), "--bag-config", str(config), "--holdout-episodes", "1",
              "--teacher-steps", "6", "--student-steps", "2", "--batch-size", "8", "--log-every", "1",
              "--latency-repeats", "1", "--device", "cpu", "--closed-loop-task", "reach-either",
              "--closed-loop-episodes", "2")
    report = json.loads((work / "report.json").read_text())
    assert report["closed_loop"]["task"] == "reach-either" and report["closed_loop"]["episodes"] == 2
    rows = report["results"]
    assert set(rows) == {"teacher@10", "teacher@1", *(v.name for v in PAPER_VARIANTS)}
    for name, row in rows.items():
        assert row["closed_loop_episodes"] == 2 and 0.0 <= row["closed_loop_success"] <= 1.0, name
        low, high = row["closed_loop_ci95"]
        assert low <= row["closed_loop_success"] <= high, name
        assert (row["closed_loop_vs_naive_p"] is None) == (name == "teacher@1"), name
        if name != "teacher@1":  # the shared statistics' paired comparison on the same episodes
            assert row["closed_loop_vs_naive"]["n"] == 2 and row["closed_loop_vs_naive"]["b"] == "teacher@1", name
    header = (work / "table.md").read_text().splitlines()[0]
    assert "closed-loop success" in header and "McNemar p vs naive@1" in header
