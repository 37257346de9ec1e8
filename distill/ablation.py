"""The paper's offline ablation (snapflow-method.md, "Ablation (offline MSE)") on one teacher:
alpha in {0, 0.3, 0.5, 0.7, 1} at lambda 0.1, lambda in {0.01, 1} at alpha 0.5, and phi kept at zero.

Every variant is distilled from the same teacher with the same data, seed and number of steps, and
evaluated on the same held-out samples from the same seeded noise, so the differences between rows
come from the variant alone. Two stages that can be used apart:

    train_students(...)    -> {variant name: student policy directory}
                              (the hook for a closed-loop column: evaluate these in a simulator)
    evaluate_students(...) -> the report;  markdown_table(report, columns) -> its table

    closed_loop(...)       -> success of every row on a simulated task (students distilled from
                              that task's recordings), beside the offline metrics
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from snapflow_distill.evaluate import Candidate, evaluate
from snapflow_distill.trainer import EXECUTION_FIELDS, Progress, TrainConfig, Trainer
from snapflow_ros.data.chunks import ChunkDataset, InMemoryChunkDataset
from snapflow_ros.errors import ConfigError
from snapflow_ros.families.registry import load_policy
from snapflow_ros.files import PROVENANCE
from snapflow_ros.markdown import table_lines
from snapflow_ros.policy.contract import FlowPolicy, RawBatch

REFERENCE = "teacher@10"
NAIVE = "teacher@1"
PRIMARY_METRIC = f"mse_vs_{REFERENCE}"  # what the brief calls the paper's metric (see PAPER_NOTE)
RANKED_METRICS = (PRIMARY_METRIC, "mse_vs_ground_truth", "mse_to_nearest_expert_route")
PAPER = "pi0.5 on LIBERO, offline action MSE on 500 held-out samples (snapflow-method.md)"
PAPER_NOTE = ("The paper's numbers come from pi0.5 on LIBERO: not comparable in scale with a small "
              "synthetic task, compare the ordering only. The notes also give 0.01169 ('naive multi-step') "
              "and 0.00773 (SnapFlow) but do not say whether that MSE is against the ground truth or "
              "the 10-step teacher, so no paper number stands beside the teacher rows.")


@dataclass(frozen=True)
class Variant:
    """One row of the ablation: a SnapFlow setting and the paper's offline MSE for it."""

    name: str
    alpha: float                  # share of samples routed to flow matching
    consistency_weight: float     # lambda
    train_target_time: bool = True  # False: phi stays zero, the jump F(x, 1, 0) cannot see s
    paper_mse: float | None = None

    @property
    def directory(self) -> str:
        """The run directory's name under the work directory ("alpha 0.3" -> "alpha-0.3")."""
        return re.sub(r"[^a-z0-9.]+", "-", self.name.lower()).strip("-")

    def setting(self) -> tuple[float, float, bool]:
        return (self.alpha, self.consistency_weight, self.train_target_time)

    def config(self, base: TrainConfig) -> TrainConfig:
        """base with this variant's loss setting; everything else (steps, seed, lr) stays shared."""
        return replace(base, objective="snapflow", alpha=self.alpha,
                       consistency_weight=self.consistency_weight,
                       train_target_time=self.train_target_time)


# lambda 0.1 at alpha 0.5 is the default row: it is not run a second time for the lambda sweep.
PAPER_VARIANTS: tuple[Variant, ...] = (
    Variant("alpha 0", 0.0, 0.1, paper_mse=0.0115),
    Variant("alpha 0.3", 0.3, 0.1, paper_mse=0.0088),
    Variant("default", 0.5, 0.1, paper_mse=0.0077),
    Variant("alpha 0.7", 0.7, 0.1, paper_mse=0.0084),
    Variant("alpha 1", 1.0, 0.1, paper_mse=0.0093),
    Variant("lambda 0.01", 0.5, 0.01, paper_mse=0.0089),
    Variant("lambda 1", 0.5, 1.0, paper_mse=0.0096),
    Variant("without phi", 0.5, 0.1, train_target_time=False, paper_mse=0.0098),
)


def check_variants(variants: Sequence[Variant]) -> None:
    """Each setting once, each name and directory once, none named like a reference row: a
    duplicate would train the same student twice or overwrite another's results."""
    if not variants:
        raise ConfigError("the ablation needs at least one variant")
    for kind, key in (("name", lambda v: v.name), ("directory", lambda v: v.directory),
                      ("setting (alpha, lambda, phi)", Variant.setting)):
        seen: dict[Any, str] = {}
        for v in variants:
            if key(v) in seen:
                raise ConfigError(f"variants '{seen[key(v)]}' and '{v.name}' share the {kind} {key(v)!r}")
            seen[key(v)] = v.name
    clashing = [v.name for v in variants if v.name in (REFERENCE, NAIVE) or not v.directory]
    if clashing:
        raise ConfigError(f"variant names {clashing} are reserved ({REFERENCE}, {NAIVE}) or empty")
    for v in variants:
        v.config(TrainConfig())  # TrainConfig validates alpha


# --- training ------------------------------------------------------------------------------
def finished_run(policy_dir: Path, config: TrainConfig, provenance: dict[str, Any]) -> bool:
    """True when policy_dir is the final policy of this very run (configuration, teacher, data):
    a re-run of the ablation then reuses it instead of retraining its last stretch."""
    path = Path(policy_dir) / PROVENANCE
    if not path.is_file():
        return False
    saved = json.loads(path.read_text())
    trained = saved.get("train_config") or {}
    wanted = {k: v for k, v in asdict(config).items() if k not in EXECUTION_FIELDS}
    return (saved.get("steps") == config.steps
            and all(trained.get(k) == v for k, v in wanted.items())
            and all(saved.get(k) == v for k, v in provenance.items()))


def train_student(teacher: Path, dataset: ChunkDataset, config: TrainConfig, run_dir: Path,
                  provenance: dict[str, Any], device: torch.device, tokenizer: Path | None = None,
                  progress: Callable[[Progress], None] | None = None) -> Path:
    """One SnapFlow student warm-started from `teacher`; run_dir/policy, reused when finished."""
    if finished_run(run_dir / "policy", config, provenance):
        return run_dir / "policy"
    trainer = Trainer(load_policy(teacher, device, tokenizer), dataset, config, run_dir, progress)
    trainer.provenance |= provenance
    return trainer.run()


def train_students(teacher: Path, dataset: ChunkDataset, base: TrainConfig,
                   variants: Sequence[Variant], workdir: Path, provenance: dict[str, Any],
                   device: torch.device, tokenizer: Path | None = None,
                   progress: Callable[[Variant], Callable[[Progress], None] | None] | None = None,
                   ) -> dict[str, Path]:
    """{variant name: student policy directory}, all from one teacher, data set and base config.

    The hook for evaluations this module does not do (closed loop, in a simulator): they take
    these paths. provenance (teacher, teacher_id, data description) is written beside each student.
    """
    check_variants(variants)
    return {v.name: train_student(teacher, dataset, v.config(base), Path(workdir) / v.directory,
                                  {**provenance, "ablation_variant": asdict(v)}, device, tokenizer,
                                  progress(v) if progress else None)
            for v in variants}


# --- evaluation ----------------------------------------------------------------------------
def evaluate_students(teacher: FlowPolicy, students: dict[str, FlowPolicy], held_out: InMemoryChunkDataset,
                      seed: int, extra: Callable[[torch.Tensor, RawBatch], dict[str, float]] | None = None,
                      batch_size: int = 32, latency_repeats: int = 10) -> dict[str, Any]:
    """evaluate() over teacher@10 (the reference), naive teacher@1 and every student at one step,
    all from the same seeded noise; `extra` adds the task's own metrics (the synthetic task: MSE to
    the nearest expert route, obstacle hit rate)."""
    if latency_repeats < 1:
        raise ConfigError(f"latency_repeats must be >= 1, got {latency_repeats}")
    candidates = [Candidate(REFERENCE, teacher, 10), Candidate(NAIVE, teacher, 1),
                  *(Candidate(name, policy, 1) for name, policy in students.items())]
    return evaluate(candidates, candidates[0], held_out, seed=seed, latency_repeats=latency_repeats,
                    extra=extra, batch_size=batch_size)


def ranks(values: Sequence[float]) -> list[float]:
    """1 = smallest; ties share their average rank (so a Spearman correlation stays honest)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            result[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return result


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Rank correlation of two orderings; None when it is undefined (fewer than 3, or constant)."""
    if len(a) != len(b) or len(a) < 3:
        return None
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    norm = math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))
    return cov / norm if norm else None


def ordering_vs_paper(variants: Sequence[Variant], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Our rank and the paper's per variant (by PRIMARY_METRIC) and the Spearman correlation of
    each ranked metric with the paper's order: the scale differs, the order is what compares."""
    with_paper = [v for v in variants if v.paper_mse is not None and v.name in results]
    paper = [v.paper_mse for v in with_paper]
    ours = [results[v.name][PRIMARY_METRIC] for v in with_paper]
    return {
        "metric": PRIMARY_METRIC,
        "ours": dict(zip((v.name for v in with_paper), ranks(ours))),
        "paper": dict(zip((v.name for v in with_paper), ranks(paper))),
        "spearman": {m: spearman([results[v.name][m] for v in with_paper], paper)
                     for m in RANKED_METRICS if all(m in results[v.name] for v in with_paper)},
    }


def ablation_report(variants: Sequence[Variant], students: dict[str, Path], evaluation: dict[str, Any],
                    **context: Any) -> dict[str, Any]:
    """The JSON report: variants with their student paths, metrics per row, ordering vs the paper."""
    return {
        "variants": [asdict(v) | {"student": str(students[v.name])} for v in variants],
        **evaluation,
        "ordering_vs_paper": ordering_vs_paper(variants, evaluation["results"]),
        "paper": {"source": PAPER, "note": PAPER_NOTE},
        **context,
    }


# --- closed loop ---------------------------------------------------------------------------
def closed_loop(task_name: str, teacher: Path, students: dict[str, Path], episodes: int, seed: int,
                image_size: int, replan_every: int, task_file: Path | None = None,
                progress: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """{row: closed-loop metrics} for teacher@10, naive teacher@1 and every student at one step on
    the same episodes (layouts and noise) of a simulated task, with each row's exact McNemar p
    against naive teacher@1 on those shared episodes. Only meaningful for students distilled from
    that task's recordings: their inputs are the simulator's camera and joint states."""
    from snapflow_ros.sim.evaluation import Candidate as SimCandidate
    from snapflow_ros.sim.evaluation import evaluate_task
    from snapflow_ros.sim.statistics import paired_comparison
    from snapflow_ros.sim.tasks import get_task

    candidates = [SimCandidate(REFERENCE, teacher, 10), SimCandidate(NAIVE, teacher, 1),
                  *(SimCandidate(name, path, 1) for name, path in students.items())]
    report = evaluate_task(get_task(task_name, task_file), candidates, episodes, seed, image_size,
                           replan_every, progress)
    outcomes = {name: [row["episode_successes"]] for name, row in report.items()}  # one seed
    results = {}
    for name, row in report.items():
        versus = None if name == NAIVE else paired_comparison(outcomes, name, NAIVE, seed=seed)
        results[name] = {"closed_loop_success": row["success_rate"], "closed_loop_ci95": row["ci95"],
                         "closed_loop_vs_naive_p": None if versus is None else versus.mcnemar_p,
                         "closed_loop_vs_naive": None if versus is None else versus.to_dict(),
                         "closed_loop_failures": row["failures"], "closed_loop_episodes": row["episodes"]}
    return results


# --- the table -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    """A metric column of the table: header, key in report["results"][row], format."""

    header: str
    key: str
    fmt: str = "{:.3g}"  # MSEs span 1e-5 (robot units) to 0.4 (the synthetic task)


METRIC_COLUMNS: tuple[Column, ...] = (
    Column(f"MSE vs {REFERENCE}", PRIMARY_METRIC),
    Column("MSE vs ground truth", "mse_vs_ground_truth"),
    Column("MSE to nearest mode", "mse_to_nearest_expert_route"),
    Column("obstacle hits", "obstacle_hit_rate", "{:.1%}"),
)
CLOSED_LOOP_COLUMNS: tuple[Column, ...] = (  # rows of closed_loop()
    Column("closed-loop success", "closed_loop_success", "{:.0%}"),
    Column("95% Wilson", "closed_loop_ci95", "[{0:.0%}, {1:.0%}]"),
    Column("McNemar p vs naive@1", "closed_loop_vs_naive_p", "{:.3g}"),
)
MISSING = "—"


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return MISSING
    return fmt.format(*value) if isinstance(value, (list, tuple)) else fmt.format(value)  # an interval: both ends


def markdown_table(report: dict[str, Any], columns: Sequence[Column] = METRIC_COLUMNS) -> str:
    """One row per reference and variant; a metric the report lacks (a task without expert
    routes, a closed-loop column not filled yet) shows as a dash."""
    results, order = report["results"], report["ordering_vs_paper"]
    headers = ["row", "alpha", "lambda", "phi", *(c.header for c in columns),
               "paper MSE (pi0.5, LIBERO)", "rank ours / paper"]
    rows = []
    for name in (REFERENCE, NAIVE):
        metrics = [_cell(results[name].get(c.key), c.fmt) for c in columns]
        rows.append([name, MISSING, MISSING, MISSING, *metrics, MISSING, MISSING])
    for v in report["variants"]:
        name = v["name"]
        metrics = [_cell(results[name].get(c.key), c.fmt) for c in columns]
        rank = (f"{order['ours'][name]:g} / {order['paper'][name]:g}" if name in order["paper"] else MISSING)
        rows.append([f"student@1 {name}", f"{v['alpha']:g}", f"{v['consistency_weight']:g}",
                     "trained" if v["train_target_time"] else "zero", *metrics,
                     _cell(v["paper_mse"], "{:.4f}"), rank])
    lines = table_lines(headers, rows)
    correlations = ", ".join(f"{k} {_cell(r, '{:+.2f}')}" for k, r in order["spearman"].items())
    return "\n".join([
        *lines, "",
        f"Held-out samples: {report['samples']}, one seeded noise (seed {report['noise_seed']}) for every row; "
        f"students sample in 1 step. Ranks by {order['metric']} among the variants (1 = lowest).",
        f"Spearman correlation with the paper's order: {correlations or MISSING}.",
        f"Paper column: {PAPER}. {PAPER_NOTE}", "",
    ])
