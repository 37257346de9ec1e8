"""The sim-table's statistics: t quantiles, the per-seed summary with its t and Wilson intervals,
the exact McNemar test, the paired bootstrap stratified by seed, the input checks, the Markdown
table and the seed plot. No simulator: outcomes are made up."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from snapflow_ros.errors import ConfigError
from snapflow_ros.sim.statistics import (
    markdown_table,
    mcnemar_exact,
    paired_comparison,
    regularized_beta,
    seed_summary,
    sim_table_report,
    summary_lines,
    t_cdf,
    t_quantile,
    wilson_interval,
    write_seed_plot,
)

SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize(("df", "expected"), [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (5, 2.571),
                                              (9, 2.262), (10, 2.228), (15, 2.131), (20, 2.086), (29, 2.045),
                                              (30, 2.042)])
def test_t_quantile_matches_the_table(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-3)


def test_t_quantile_matches_closed_forms_and_is_symmetric():
    for p in (0.6, 0.9, 0.95, 0.99, 0.999):
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-8)      # Cauchy
        assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-8)
        assert t_quantile(1 - p, 7) == pytest.approx(-t_quantile(p, 7), rel=1e-10)
    assert t_quantile(0.995, 5) == pytest.approx(4.032, abs=1e-3)
    assert t_quantile(0.975, 10**6) == pytest.approx(1.95996, abs=1e-4)
    assert t_cdf(0.0, 3) == 0.5
    assert t_cdf(t_quantile(0.975, 12), 12) == pytest.approx(0.975, abs=1e-10)
    assert regularized_beta(2.0, 3.0, 0.4) == pytest.approx(0.5248, abs=1e-10)  # P(Binomial(4, 0.4) >= 2)
    with pytest.raises(ConfigError, match="p=1"):
        t_quantile(1, 3)


def test_mcnemar_exact_known_values():
    assert mcnemar_exact(10, 2) == pytest.approx(0.03857, abs=1e-5)
    assert mcnemar_exact(2, 10) == mcnemar_exact(10, 2)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(6, 0) == pytest.approx(2 / 64)
    assert mcnemar_exact(1, 0) == 1.0


def _pairs(a_better: int, b_better: int, both: int, neither: int, seeds: int) -> tuple[np.ndarray, np.ndarray]:
    """Two policies' (seeds, episodes) outcomes with the given counts of each pair kind."""
    a = np.array([True] * a_better + [False] * b_better + [True] * both + [False] * neither)
    b = np.array([False] * a_better + [True] * b_better + [True] * both + [False] * neither)
    order = np.random.default_rng(1).permutation(a.size)
    return a[order].reshape(seeds, -1), b[order].reshape(seeds, -1)


def test_paired_comparison_counts_the_discordant_pairs():
    a, b = _pairs(a_better=10, b_better=2, both=30, neither=18, seeds=3)
    c = paired_comparison({"student@1": a, "teacher@1": b}, "student@1", "teacher@1", resamples=2000)
    assert (c.a_better, c.b_better, c.n) == (10, 2, 60)
    assert c.difference == pytest.approx(8 / 60)
    assert c.mcnemar_p == pytest.approx(0.03857, abs=1e-5)
    assert c.significant() and not c.significant(alpha=0.01)
    assert c.ci95[0] <= c.difference <= c.ci95[1]


def test_identical_policies_differ_by_nothing_under_every_resample():
    a = np.random.default_rng(0).random((4, 25)) < 0.6
    c = paired_comparison({"x": a, "y": a.copy()}, "x", "y", resamples=500)
    assert (c.a_better, c.b_better, c.difference, c.mcnemar_p) == (0, 0, 0.0, 1.0)
    assert c.ci95 == (0.0, 0.0)  # the same indices are drawn for both policies
    assert c.bootstrap_p == 1.0


def test_bootstrap_is_stratified_by_seed():
    # Seed 0: a always better; seeds 1 and 2: a tie on every episode. Resampling within each seed
    # cannot move the difference off 1/3; resampling across seeds would.
    a = np.ones((3, 20), dtype=bool)
    b = np.ones((3, 20), dtype=bool)
    b[0] = False
    c = paired_comparison({"a": a, "b": b}, "a", "b", resamples=500)
    assert c.difference == pytest.approx(1 / 3)
    assert c.ci95 == pytest.approx((1 / 3, 1 / 3))


def test_bootstrap_covers_the_true_difference_and_is_reproducible():
    rng = np.random.default_rng(7)
    seeds, episodes, true_difference = 5, 200, 0.3
    shared = rng.random((seeds, episodes))
    a, b = shared < 0.8, shared < 0.5  # a succeeds whenever b does: difference 0.3 in expectation
    outcomes = {"student@1": a, "teacher@1": b}
    first = paired_comparison(outcomes, "student@1", "teacher@1", resamples=4000, seed=3)
    again = paired_comparison(outcomes, "student@1", "teacher@1", resamples=4000, seed=3)
    assert first == again
    low, high = first.ci95
    assert low < true_difference < high and low > 0
    # The percentile interval's width is about that of the normal one, so episodes are resampled.
    per_episode = (a.astype(float) - b).ravel()
    standard_error = per_episode.std() / math.sqrt(per_episode.size)
    assert high - low == pytest.approx(2 * 1.96 * standard_error, rel=0.15)
    assert first.bootstrap_p < 0.001 and first.mcnemar_p < 1e-10
    other = paired_comparison(outcomes, "student@1", "teacher@1", resamples=4000, seed=4)
    assert other.ci95 == pytest.approx(first.ci95, abs=0.02)


def test_seed_summary_rates_t_interval_and_pooled_wilson():
    outcomes = {"teacher@10": [[True, True, False, True], [True, False, False, True], [True, True, True, True],
                               [False, False, True, True], [True, True, True, False]]}
    s = seed_summary(outcomes)["teacher@10"]
    rates = [0.75, 0.5, 1.0, 0.5, 0.75]
    assert s["per_seed"] == rates and s["seed_successes"] == [3, 2, 4, 2, 3]
    assert s["mean"] == pytest.approx(0.7)
    half = 2.776 * np.std(rates, ddof=1) / math.sqrt(5)
    assert s["seed_half_width"] == pytest.approx(half, abs=1e-3)
    assert s["seed_ci95"] == pytest.approx([0.7 - half, 0.7 + half], abs=1e-3)
    assert (s["successes"], s["episodes"], s["pooled_rate"]) == (14, 20, 0.7)
    assert s["pooled_ci95"] == list(wilson_interval(14, 20))


def test_seed_interval_is_clipped_to_rates():
    outcomes = {"p": np.array([[True] * 5, [True] * 5, [False] * 5])}
    low, high = seed_summary(outcomes)["p"]["seed_ci95"]
    assert (low, high) == (0.0, 1.0)


def test_seeds_with_different_episode_counts_are_rejected_naming_the_policy():
    ragged = {"teacher@10": [[True, False, True]] * 3, "student@1": [[True, False, True], [True, False], [True] * 3]}
    with pytest.raises(ConfigError, match=r"student@1.*different episode counts \[3, 2, 3\]"):
        seed_summary(ragged)


def test_other_bad_outcomes_are_rejected():
    good = np.ones((3, 4), dtype=bool)
    with pytest.raises(ConfigError, match=r"'teacher@2'.*\(3, 5\)"):
        seed_summary({"teacher@10": good, "teacher@2": np.ones((3, 5), dtype=bool)})
    with pytest.raises(ConfigError, match="at least 3"):
        seed_summary({"teacher@10": good[:2]})
    with pytest.raises(ConfigError, match="'teacher@1'.*booleans"):
        seed_summary({"teacher@1": np.full((3, 4), 0.5)})
    with pytest.raises(ConfigError, match="'student@1'.*shape"):
        seed_summary({"student@1": np.ones(4, dtype=bool)})
    assert seed_summary({"teacher@1": np.ones((3, 4), dtype=int)})["teacher@1"]["mean"] == 1.0
    with pytest.raises(ConfigError, match="no policy 'teacher@1'"):
        paired_comparison({"student@1": good}, "student@1", "teacher@1")


def _table() -> dict:
    rng = np.random.default_rng(11)
    per_task = {}
    for task, student in (("reach-either", 0.85), ("detour", 0.55)):
        shared = rng.random((3, 60))
        # On detour the student is as good as the teacher but fails on other episodes.
        own = shared if task == "reach-either" else rng.random((3, 60))
        per_task[task] = {"teacher@10": shared < 0.55, "teacher@2": shared < 0.5,
                          "teacher@1": shared < 0.1, "student@1": own < student}
    return per_task


def test_report_is_json_and_the_markdown_has_every_row_and_verdict():
    report = sim_table_report(_table(), resamples=1000)
    assert json.loads(json.dumps(report)) == report
    reach = report["tasks"]["reach-either"]
    assert (reach["seeds"], reach["episodes_per_seed"]) == (3, 60)
    verdicts = {(task, c["b"]): c["significant"] for task, entry in report["tasks"].items()
                for c in entry["comparisons"]}
    assert verdicts == {("reach-either", "teacher@1"): True, ("reach-either", "teacher@10"): True,
                        ("detour", "teacher@1"): True, ("detour", "teacher@10"): False}
    text = markdown_table(report)
    lines = text.splitlines()
    for task in ("reach-either", "detour"):
        for policy in ("teacher@10", "teacher@2", "teacher@1", "student@1"):
            assert sum(line.startswith(f"| {task} | {policy} |") for line in lines) == 1
        row = next(line for line in lines if line.startswith(f"| {task} | student@1 vs teacher@10 |"))
        assert row.endswith("| yes |") == verdicts[(task, "teacher@10")]
        assert row.endswith("| no |") != verdicts[(task, "teacher@10")]
    assert "| significant at 5% |" in text
    s = reach["policies"]["student@1"]
    assert f"{100 * s['mean']:.1f}% ± {100 * s['seed_half_width']:.1f}%" in text


def test_summary_lines_give_each_task_its_rates_and_verdicts():
    report = sim_table_report(_table(), resamples=1000)
    lines = summary_lines(report)
    assert len(lines) == 2 * (1 + 2)  # per task: the rates, then its two comparisons
    head = lines[0]
    assert head.startswith("reach-either (3 seeds x 60 episodes): teacher@10 ")
    student = report["tasks"]["reach-either"]["policies"]["student@1"]
    assert f"student@1 {100 * student['pooled_rate']:.0f}%" in head
    detour_vs_teacher = next(line for line in lines if line.startswith("  student@1 vs teacher@10") and
                             lines.index(line) > 3)
    assert "not significant at 5%" in detour_vs_teacher


def test_compared_policies_are_parameters():
    report = sim_table_report(_table(), comparisons=[("teacher@2", "teacher@10")], resamples=200)
    assert [c["a"] + " vs " + c["b"] for c in report["tasks"]["detour"]["comparisons"]] == ["teacher@2 vs teacher@10"]
    assert "| detour | teacher@2 vs teacher@10 |" in markdown_table(report)
    with pytest.raises(ConfigError, match="task 'reach-either'.*no policy 'student@4'"):
        sim_table_report(_table(), comparisons=[("student@4", "teacher@10")], resamples=200)


def test_seed_plot_is_svg_with_a_dot_per_seed(tmp_path):
    per_task = _table()
    per_task["a<b & c"] = per_task.pop("detour")  # names are escaped
    report = sim_table_report(per_task, resamples=200)
    path = tmp_path / "plots" / "seeds.svg"
    write_seed_plot(report, path)
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    dots = [e for e in root.iter(f"{SVG}circle") if e.get("class") == "seed-rate"]
    means = [e for e in root.iter(f"{SVG}rect") if e.get("class") == "seed-mean"]
    assert len(dots) == 2 * 4 * 3 and len(means) == 2 * 4
    texts = [e.text for e in root.iter(f"{SVG}text")]
    assert "a<b & c" in texts and "student@1" in texts
    # A seed at 100% sits on the top of the axis, one at 0% on its bottom.
    height = float(root.get("height"))
    cys = [float(e.get("cy")) for e in dots]
    assert all(60 - 1e-9 <= cy <= height - 60 + 1e-9 for cy in cys)
