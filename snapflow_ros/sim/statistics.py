"""Statistics of a multi-seed closed-loop table (sim-table): every seed is its own recording,
teacher and student, and within a seed every policy met the same N episodes (layouts and noise),
so per task the outcomes are a boolean (seeds, episodes) array per policy, paired across policies.

Two kinds of uncertainty are reported because they answer different questions: the spread over
seeds (Student t, S-1 degrees of freedom) says how much a fresh recording/distillation would move
the rate; the pooled Wilson interval over all S*N episodes only says how well those seeds were
measured. Policies are compared on the shared episodes: the exact McNemar test on the discordant
pairs and a paired bootstrap that resamples episodes within each seed.

Pure Python and numpy (no scipy): the t quantile comes from the regularized incomplete beta.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from snapflow_ros.errors import ConfigError
from snapflow_ros.markdown import table_lines


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (sound at 0% and 100%, unlike the normal one)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


Outcomes = np.ndarray | Sequence[Sequence[bool]]  # (seeds, episodes) successes of one policy on one task

DEFAULT_COMPARISONS: tuple[tuple[str, str], ...] = (("student@1", "teacher@1"), ("student@1", "teacher@10"))
MIN_SEEDS = 3
BOOTSTRAP_RESAMPLES = 10_000


# --- Student t quantile --------------------------------------------------------------------------

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta (modified Lentz), converges for x < (a+1)/(a+b+2)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function (the CDF of Beta(a, b) at x)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df degrees of freedom."""
    if df <= 0:
        raise ConfigError(f"t distribution: df={df}, expected > 0")
    tail = 0.5 * regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p, by bisection on t_cdf (e.g. t_quantile(0.975, 4) = 2.776)."""
    if not 0.0 < p < 1.0:
        raise ConfigError(f"t quantile: p={p}, expected 0 < p < 1")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, high * 2.0
    for _ in range(200):
        middle = (low + high) / 2.0
        if t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low < 1e-12 * max(1.0, high):
            break
    return (low + high) / 2.0


# --- input checks --------------------------------------------------------------------------------

def as_outcomes(policy: str, value: Outcomes) -> np.ndarray:
    """One policy's successes as a bool (seeds, episodes) array; ragged seeds or non-0/1 values are
    refused, naming the policy, since the pairing and the per-seed rates assume equal episodes."""
    if isinstance(value, np.ndarray):
        array = value
    else:
        rows = [list(row) for row in value]
        lengths = [len(row) for row in rows]
        if len(set(lengths)) > 1:
            raise ConfigError(f"policy '{policy}': seeds ran different episode counts {lengths}; every seed "
                              "must run the same N episodes for every policy")
        array = np.asarray(rows)
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ConfigError(f"policy '{policy}': outcomes of shape {array.shape}, expected (seeds, episodes) "
                          "with at least one of each")
    if array.dtype != bool:
        if not np.isin(array, (0, 1)).all():
            raise ConfigError(f"policy '{policy}': outcomes must be booleans (or 0/1), got values "
                              f"{sorted(set(np.unique(array).tolist()) - {0, 1})[:5]}")
        array = array.astype(bool)
    return array


def check_task(outcomes: Mapping[str, Outcomes], min_seeds: int = MIN_SEEDS) -> dict[str, np.ndarray]:
    """Every policy of a task as a bool array, all of one (seeds, episodes) shape with enough seeds."""
    if not outcomes:
        raise ConfigError("no policies: outcomes must map each policy name to its (seeds, episodes) successes")
    arrays = {policy: as_outcomes(policy, value) for policy, value in outcomes.items()}
    first, shape = next(iter(arrays.items()))[0], next(iter(arrays.values())).shape
    for policy, array in arrays.items():
        if array.shape != shape:
            raise ConfigError(f"policy '{policy}': outcomes of shape {array.shape} (seeds, episodes), but "
                              f"'{first}' has {shape}; all policies of a task must share seeds and episodes")
    if shape[0] < min_seeds:
        raise ConfigError(f"policy '{first}': {shape[0]} seed(s), the seed interval needs at least {min_seeds}")
    return arrays


# --- per-policy summary --------------------------------------------------------------------------

def seed_summary(outcomes: Mapping[str, Outcomes], min_seeds: int = MIN_SEEDS) -> dict[str, dict]:
    """Per policy: the rate of each seed, their mean with a 95% t interval over seeds, and the
    pooled rate with its Wilson interval over all seeds' episodes."""
    if min_seeds < 2:
        raise ConfigError(f"min_seeds={min_seeds}: an interval over seeds needs at least 2")
    summary = {}
    for policy, array in check_task(outcomes, min_seeds).items():
        seeds, episodes = array.shape
        rates = array.mean(axis=1)
        mean, sd = float(rates.mean()), float(rates.std(ddof=1))
        half = t_quantile(0.975, seeds - 1) * sd / math.sqrt(seeds)
        successes, n = int(array.sum()), seeds * episodes
        low, high = wilson_interval(successes, n)
        summary[policy] = {"seeds": seeds, "episodes_per_seed": episodes,
                           "per_seed": [float(r) for r in rates], "seed_successes": [int(s) for s in array.sum(1)],
                           "mean": mean, "sd": sd, "seed_half_width": float(half),
                           "seed_ci95": [max(0.0, mean - half), min(1.0, mean + half)],
                           "successes": successes, "episodes": n, "pooled_rate": successes / n,
                           "pooled_ci95": [low, high]}
    return summary


# --- paired comparison ---------------------------------------------------------------------------

def mcnemar_exact(a_better: int, b_better: int) -> float:
    """Exact two-sided McNemar p: under no difference each discordant pair is a fair coin flip."""
    n, k = a_better + b_better, min(a_better, b_better)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    difference: float                # rate(a) - rate(b) on the shared episodes
    ci95: tuple[float, float]        # paired bootstrap percentile interval of the difference
    mcnemar_p: float
    bootstrap_p: float
    a_better: int                    # discordant episodes: a succeeded, b failed
    b_better: int                    # discordant episodes: b succeeded, a failed
    n: int                           # shared episodes (seeds * episodes)
    resamples: int
    seed: int

    def significant(self, alpha: float = 0.05) -> bool:
        """Decided by the exact McNemar test (the bootstrap p is reported alongside)."""
        return self.mcnemar_p < alpha

    def to_dict(self) -> dict:
        return asdict(self) | {"ci95": list(self.ci95)}


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = 0) -> np.ndarray:
    """Mean differences a - b over resamples that redraw episode indices within each seed, the same
    indices for both policies, so the pairing and the seed strata are kept."""
    if resamples < 1:
        raise ConfigError(f"bootstrap resamples={resamples}, expected >= 1")
    per_episode = a.astype(np.int8) - b.astype(np.int8)
    seeds, episodes = per_episode.shape
    rng = np.random.default_rng(seed)
    rows = np.arange(seeds)[:, None]
    chunk = max(1, 2_000_000 // (seeds * episodes))  # bounds memory; depends only on the shape
    means = []
    for start in range(0, resamples, chunk):
        indices = rng.integers(0, episodes, size=(min(chunk, resamples - start), seeds, episodes))
        means.append(per_episode[rows, indices].mean(axis=(1, 2)))
    return np.concatenate(means)


def paired_comparison(outcomes: Mapping[str, Outcomes], a: str, b: str, resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = 0) -> Comparison:
    """Policy a against policy b on their shared episodes of one task."""
    for name in (a, b):
        if name not in outcomes:
            raise ConfigError(f"comparison '{a} vs {b}': no policy '{name}' among {list(outcomes)}")
    arrays = check_task({a: outcomes[a], b: outcomes[b]}, min_seeds=1)
    first, second = arrays[a], arrays[b]
    a_better, b_better = int((first & ~second).sum()), int((second & ~first).sum())
    boot = paired_bootstrap(first, second, resamples, seed)
    low, high = np.quantile(boot, [0.025, 0.975])
    # Two-sided, from how often the resampled difference lands on either side of 0; the +1 keeps a
    # finite number of resamples from claiming p = 0.
    below, above = int((boot <= 0).sum()), int((boot >= 0).sum())
    bootstrap_p = min(1.0, 2 * (min(below, above) + 1) / (resamples + 1))
    return Comparison(a=a, b=b, difference=float(first.mean() - second.mean()), ci95=(float(low), float(high)),
                      mcnemar_p=mcnemar_exact(a_better, b_better), bootstrap_p=bootstrap_p, a_better=a_better,
                      b_better=b_better, n=int(first.size), resamples=resamples, seed=seed)


# --- the table -----------------------------------------------------------------------------------

def sim_table_report(per_task: Mapping[str, Mapping[str, Outcomes]],
                     comparisons: Sequence[tuple[str, str]] = DEFAULT_COMPARISONS,
                     resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0, alpha: float = 0.05,
                     min_seeds: int = MIN_SEEDS) -> dict:
    """The JSON-serialisable report of a sim-table: per task its policies' seed summaries and the
    comparisons. Every comparison of a task uses the same bootstrap seed, hence the same resamples."""
    if not per_task:
        raise ConfigError("no tasks: per_task must map each task name to its policies' outcomes")
    tasks = {}
    for task, outcomes in per_task.items():
        try:
            summary = seed_summary(outcomes, min_seeds)
            compared = [paired_comparison(outcomes, a, b, resamples, seed) for a, b in comparisons]
        except ConfigError as error:
            raise ConfigError(f"task '{task}': {error}") from error
        first = next(iter(summary.values()))
        tasks[task] = {"seeds": first["seeds"], "episodes_per_seed": first["episodes_per_seed"],
                       "policies": summary,
                       "comparisons": [c.to_dict() | {"significant": c.significant(alpha)} for c in compared]}
    return {"tasks": tasks, "alpha": alpha, "resamples": resamples, "bootstrap_seed": seed,
            "seed_interval": "95% Student t over seed rates", "pooled_interval": "95% Wilson over all episodes",
            "significance": "exact two-sided McNemar on the shared episodes"}


def _pct(rate: float) -> str:
    return f"{100 * rate:.1f}%"


def _p(value: float) -> str:
    return "< 0.0001" if value < 1e-4 else f"{value:.4f}"


def table_rows(report: dict) -> list[list[str]]:
    """One row per task and policy: per-seed rates, mean ± t half-width, pooled rate [Wilson]."""
    rows = []
    for task, entry in report["tasks"].items():
        for policy, s in entry["policies"].items():
            low, high = s["pooled_ci95"]
            rows.append([task, policy, " · ".join(f"{100 * r:.0f}%" for r in s["per_seed"]),
                         f"{_pct(s['mean'])} ± {_pct(s['seed_half_width'])}",
                         f"{_pct(s['pooled_rate'])} [{_pct(low)}, {_pct(high)}] ({s['successes']}/{s['episodes']})"])
    return rows


def comparison_rows(report: dict) -> list[list[str]]:
    """One row per task and comparison: difference, bootstrap CI, discordant pairs, p-values, verdict."""
    rows = []
    for task, entry in report["tasks"].items():
        for c in entry["comparisons"]:
            low, high = c["ci95"]
            rows.append([task, f"{c['a']} vs {c['b']}", f"{100 * c['difference']:+.1f} pts",
                         f"[{100 * low:+.1f}, {100 * high:+.1f}]", f"{c['a_better']} / {c['b_better']} of {c['n']}",
                         _p(c["mcnemar_p"]), _p(c["bootstrap_p"]), "yes" if c["significant"] else "no"])
    return rows


def markdown_table(report: dict) -> str:
    """The sim-table as Markdown: the policies' table, then the comparisons' table."""
    alpha = report["alpha"]
    lines = table_lines(["task", "policy", "per-seed success", "mean over seeds ± 95% t",
                         "pooled (95% Wilson)"], table_rows(report))
    lines += ["", *table_lines(["task", "comparison", "difference", "95% CI (paired bootstrap)",
                                "discordant (a / b better)", "McNemar p", "bootstrap p",
                                f"significant at {100 * alpha:g}%"], comparison_rows(report))]
    return "\n".join(lines) + "\n"


def summary_lines(report: dict) -> list[str]:
    """A few lines per task: every policy's pooled rate, and each comparison's difference and
    McNemar p (what sim-demo prints beside its one-seed table)."""
    lines = []
    for task, entry in report["tasks"].items():
        rates = ", ".join(f"{name} {100 * s['pooled_rate']:.0f}%" for name, s in entry["policies"].items())
        lines.append(f"{task} ({entry['seeds']} seeds x {entry['episodes_per_seed']} episodes): {rates}")
        for c in entry["comparisons"]:
            verdict = "significant" if c["significant"] else "not significant"
            lines.append(f"  {c['a']} vs {c['b']}: {100 * c['difference']:+.1f} pts, McNemar p {_p(c['mcnemar_p'])} "
                         f"({verdict} at {100 * report['alpha']:g}%)")
    return lines


# --- the plot ------------------------------------------------------------------------------------

def write_seed_plot(report: dict, path: Path) -> None:
    """Per task, each policy's seed rates as dots and their mean with the 95% t interval as a bar,
    so the seed-to-seed spread is seen next to the interval that summarises it."""
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    tasks = report["tasks"]
    names = list(dict.fromkeys(name for entry in tasks.values() for name in entry["policies"]))
    column, gap, margin, legend = 40, 30, 60, 150
    group_widths = [column * len(entry["policies"]) for entry in tasks.values()]
    width = 2 * margin + sum(group_widths) + gap * max(len(tasks) - 1, 0) + legend
    height = 420

    def y(rate: float) -> float:
        return height - margin - rate * (height - 2 * margin)

    plot_right = width - legend - margin
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             'font-size="12">', '<rect width="100%" height="100%" fill="white"/>',
             f'<line x1="{margin}" y1="{y(0)}" x2="{plot_right}" y2="{y(0)}" stroke="black"/>',
             f'<line x1="{margin}" y1="{y(0)}" x2="{margin}" y2="{y(1)}" stroke="black"/>',
             f'<text x="15" y="{height / 2}" transform="rotate(-90 15 {height / 2})" text-anchor="middle">'
             'closed-loop success: seeds (dots), mean with 95% t interval</text>']
    for tick in range(0, 11, 2):
        parts.append(f'<line x1="{margin}" y1="{y(tick / 10)}" x2="{plot_right}" y2="{y(tick / 10)}" '
                     'stroke="#dddddd"/>')
        parts.append(f'<text x="{margin - 8}" y="{y(tick / 10) + 4}" text-anchor="end">{tick * 10}%</text>')
    left = margin
    for (task, entry), group in zip(tasks.items(), group_widths):
        parts.append(f'<text x="{left + group / 2}" y="{y(0) + 20}" text-anchor="middle">{escape(task)}</text>')
        for j, (name, s) in enumerate(entry["policies"].items()):
            colour, centre = colours[names.index(name) % len(colours)], left + column * (j + 0.5)
            low, high = s["seed_ci95"]
            parts.append(f'<line class="seed-interval" x1="{centre}" y1="{y(low)}" x2="{centre}" y2="{y(high)}" '
                         f'stroke="{colour}" stroke-width="2"/>')
            for end in (low, high):
                parts.append(f'<line x1="{centre - 5}" y1="{y(end)}" x2="{centre + 5}" y2="{y(end)}" '
                             f'stroke="{colour}" stroke-width="2"/>')
            parts.append(f'<rect class="seed-mean" x="{centre - 10}" y="{y(s["mean"]) - 2}" width="20" height="4" '
                         f'fill="{colour}"/>')
            seeds = len(s["per_seed"])
            for k, rate in enumerate(s["per_seed"]):
                dx = (k - (seeds - 1) / 2) * min(4.0, 24.0 / max(seeds - 1, 1))
                parts.append(f'<circle class="seed-rate" cx="{centre + dx}" cy="{y(rate)}" r="3" fill="{colour}" '
                             'fill-opacity="0.55" stroke="white" stroke-width="0.5"/>')
        left += group + gap
    for i, name in enumerate(names):
        parts.append(f'<text x="{width - legend}" y="{margin + 16 * i}" fill="{colours[i % len(colours)]}">'
                     f'{escape(name)}</text>')
    parts.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n")
