"""Closed-loop success of several policies on the simulated tasks, with 95% confidence intervals
and latency percentiles, as a JSON report and a success-vs-latency plot (SVG, no plotting library).

Every candidate of a task meets the same layouts: the robot is rebuilt from the same seed for
each, so the comparison is paired.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from snapflow_ros.policy.chunk_executor import ExecutorConfig
from snapflow_ros.runtime.serving import load_served_policy
from snapflow_ros.runtime.timing import percentiles
from snapflow_ros.sim.robot import MetaWorldRobot
from snapflow_ros.sim.rollout import EpisodeResult, run_episode
from snapflow_ros.sim.statistics import mcnemar_exact, wilson_interval
from snapflow_ros.sim.tasks import SimTask

# The node's defaults on the simulated robot (config/sim_robot.yaml's action_dt): one action per
# 20 Hz step, stale actions dropped, no blending; without a watermark the chunk timer decides.
SIM_EXECUTOR = ExecutorConfig(action_dt_s=0.05)
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f"]  # per policy


@dataclass(frozen=True)
class Candidate:
    name: str          # e.g. "student@1", "student@1+rtc"
    checkpoint: Path
    steps: int         # expert passes per chunk
    chunking: str = "plain"  # the executor's chunking: plain | blend | rtc
    guided: bool = False     # rtc by guided inpainting (a teacher), not a trained prefix
    blend_decay: float = 0.0  # blend's weight of the previous chunk, exp(-decay * k)


def candidate_name(policy: str, steps: int, chunking: str = "plain", guided: bool = False) -> str:
    suffix = "" if chunking == "plain" else "+guided-rtc" if guided else f"+{chunking}"
    return f"{policy}@{steps}{suffix}"


def summarize(results: list[EpisodeResult]) -> dict:
    successes = sum(r.success for r in results)
    low, high = wilson_interval(successes, len(results))
    return {"episodes": len(results), "successes": successes, "success_rate": successes / max(len(results), 1),
            "ci95": [low, high], "failures": dict(Counter(r.failure for r in results if not r.success)),
            "mean_steps": float(np.mean([r.steps for r in results])) if results else 0.0,
            "latency_ms": percentiles([value for r in results for value in r.latencies_ms]),
            "boundary_jump": _mean_and_p95([jump for r in results for jump in r.boundary_jumps]),
            "mean_jerk": float(np.mean([r.mean_jerk for r in results])) if results else 0.0,
            "episode_successes": [r.success for r in results]}  # in episode order: paired comparisons


def _mean_and_p95(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)) if values else 0.0,
            "p95": float(np.percentile(values, 95)) if values else 0.0, "count": len(values)}


def evaluate_task(task: SimTask, candidates: list[Candidate], episodes: int, seed: int, image_size: int,
                  replan_every: int, progress: Callable[[str], None] | None = None,
                  executor: ExecutorConfig = SIM_EXECUTOR, latency_s: float = 0.0) -> dict:
    """Each candidate under the node's chunk executor (`executor`: its parameters, with the
    candidate's chunking; the chunk timer every `replan_every` steps), with `latency_s` of
    simulated inference delay."""
    report = {}
    for candidate in candidates:
        policy = load_served_policy(candidate.checkpoint, "torch", "cpu", candidate.steps, guided=candidate.guided)
        chunking = replace(executor, chunking=candidate.chunking,
                           blend_decay=candidate.blend_decay)
        robot = MetaWorldRobot(task, seed=seed, image_size=image_size)
        try:
            results = []
            for episode in range(episodes):
                results.append(run_episode(robot, policy, chunking, replan_every, seed=seed + episode,
                                           latency_s=latency_s))
                if progress:
                    progress(f"{task.name} {candidate.name}: {sum(r.success for r in results)}/{episode + 1}")
        finally:
            robot.close()
        report[candidate.name] = summarize(results) | {
            "checkpoint": str(candidate.checkpoint), "steps": candidate.steps, "seed": seed,
            "chunking": candidate.chunking, "guided": candidate.guided, "max_delay": policy.max_delay}
    return report


def overall(per_task: dict[str, dict]) -> dict:
    """Pooled over tasks: successes and episodes summed; latency percentiles averaged, boundary
    jumps weighted by their count."""
    names = next(iter(per_task.values())).keys()
    pooled = {}
    for name in names:
        rows = [task[name] for task in per_task.values()]
        successes, n = sum(r["successes"] for r in rows), sum(r["episodes"] for r in rows)
        low, high = wilson_interval(successes, n)
        jumps = [r["boundary_jump"] for r in rows]
        switches = sum(j["count"] for j in jumps)
        pooled[name] = {"episodes": n, "successes": successes, "success_rate": successes / max(n, 1),
                        "ci95": [low, high],
                        "latency_ms_p50_mean": float(np.mean([r["latency_ms"]["p50"] for r in rows])),
                        "boundary_jump_mean": sum(j["mean"] * j["count"] for j in jumps) / max(switches, 1),
                        "mean_jerk": float(np.mean([r["mean_jerk"] for r in rows]))}
    return pooled


def paired_test(per_task: dict[str, dict], a: str, b: str) -> dict:
    """a against b on the same episodes of every task (same layouts and seeds): the discordant
    episodes and the exact McNemar p of their split."""
    pairs = [(x, y) for rows in per_task.values()
             for x, y in zip(rows[a]["episode_successes"], rows[b]["episode_successes"], strict=True)]
    a_better, b_better = sum(x and not y for x, y in pairs), sum(y and not x for x, y in pairs)
    return {"a": a, "b": b, "episodes": len(pairs), "a_better": a_better, "b_better": b_better,
            "mcnemar_p": mcnemar_exact(a_better, b_better)}


def write_plot(per_task: dict[str, dict], path: Path) -> None:
    """Success rate (with 95% CI) against p50 latency, one colour per policy, one mark per task."""
    width, height, margin, legend = 760, 420, 60, 140  # the legends stand right of the axes
    points = [(task, name, r) for task, rows in per_task.items() for name, r in rows.items()]
    max_latency = max(r["latency_ms"]["p50"] for _, _, r in points) * 1.15
    names = list(dict.fromkeys(name for _, name, _ in points))
    tasks = list(per_task)

    def x(latency: float) -> float:
        return margin + latency / max_latency * (width - legend - 2 * margin)

    def y(rate: float) -> float:
        return height - margin - rate * (height - 2 * margin)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             'font-size="12">', '<rect width="100%" height="100%" fill="white"/>',
             f'<line x1="{margin}" y1="{y(0)}" x2="{x(max_latency)}" y2="{y(0)}" stroke="black"/>',
             f'<line x1="{margin}" y1="{y(0)}" x2="{margin}" y2="{y(1)}" stroke="black"/>',
             f'<text x="{x(max_latency / 2)}" y="{height - 15}" text-anchor="middle">p50 latency per chunk (ms)</text>',
             f'<text x="15" y="{height / 2}" transform="rotate(-90 15 {height / 2})" text-anchor="middle">'
             'closed-loop success (95% CI)</text>']
    for tick in range(0, 11, 2):
        parts.append(f'<text x="{margin - 8}" y="{y(tick / 10) + 4}" text-anchor="end">{tick * 10}%</text>')
    for i in range(5):
        latency = max_latency * i / 4
        parts.append(f'<text x="{x(latency)}" y="{y(0) + 18}" text-anchor="middle">{latency:.1f}</text>')
    markers = ["circle", "rect", "diamond"]
    for task, name, r in points:
        colour = COLOURS[names.index(name) % len(COLOURS)]
        px, (low, high) = x(r["latency_ms"]["p50"]), r["ci95"]
        parts.append(f'<line x1="{px}" y1="{y(low)}" x2="{px}" y2="{y(high)}" stroke="{colour}"/>')
        py, shape = y(r["success_rate"]), markers[tasks.index(task) % len(markers)]
        if shape == "circle":
            parts.append(f'<circle cx="{px}" cy="{py}" r="5" fill="{colour}"/>')
        elif shape == "rect":
            parts.append(f'<rect x="{px - 5}" y="{py - 5}" width="10" height="10" fill="{colour}"/>')
        else:
            parts.append(f'<polygon points="{px},{py - 6} {px + 6},{py} {px},{py + 6} {px - 6},{py}" fill="{colour}"/>')
    parts += _legend(names, width - legend, margin)
    for i, task in enumerate(tasks):
        parts.append(f'<text x="{width - legend}" y="{margin + 16 * (len(names) + 1 + i)}">'
                     f'{["●", "■", "◆"][i % 3]} {task}</text>')
    _write_svg(parts, path)


def _legend(names: list[str], x: float, y: float) -> list[str]:
    return [f'<text x="{x}" y="{y + 16 * i}" fill="{COLOURS[i % len(COLOURS)]}">{name}</text>'
            for i, name in enumerate(names)]


def _write_svg(parts: list[str], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([*parts, "</svg>"]) + "\n")


def write_latency_plot(sweep: dict[str, dict], path: Path) -> None:
    """Two panels over the simulated latency (the sweep's keys, ms), one line per policy, pooled
    over tasks: success rate with its 95% CI, and the mean jump at chunk switches."""
    latencies = [float(key) for key in sweep]
    names = list(next(iter(sweep.values()))["overall"])
    panel_w, height, margin, legend = 330, 380, 55, 170
    top_jump = max(r["boundary_jump_mean"] for s in sweep.values() for r in s["overall"].values()) * 1.1 or 1.0
    span = max(latencies) - min(latencies) or 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * panel_w + legend}" height="{height}" '
             'font-family="sans-serif" font-size="12">', '<rect width="100%" height="100%" fill="white"/>']

    def panel(left: float, title: str, top: float, value: Callable[[dict], float], interval: bool) -> None:
        def x(latency: float) -> float:
            return left + margin + (latency - min(latencies)) / span * (panel_w - 1.5 * margin)

        def y(v: float) -> float:
            return height - margin - v / top * (height - 2 * margin)

        parts.extend([f'<line x1="{x(min(latencies))}" y1="{y(0)}" x2="{x(max(latencies))}" y2="{y(0)}" '
                      'stroke="black"/>',
                      f'<line x1="{left + margin}" y1="{y(0)}" x2="{left + margin}" y2="{y(top)}" stroke="black"/>',
                      f'<text x="{left + panel_w / 2}" y="{margin - 20}" text-anchor="middle">{title}</text>',
                      f'<text x="{left + panel_w / 2}" y="{height - 15}" text-anchor="middle">'
                      'simulated latency (ms)</text>',
                      f'<text x="{left + margin - 6}" y="{y(top) + 4}" text-anchor="end">{top:.3g}</text>',
                      f'<text x="{left + margin - 6}" y="{y(0) + 4}" text-anchor="end">0</text>'])
        parts.extend(f'<text x="{x(latency)}" y="{y(0) + 16}" text-anchor="middle">{latency:g}</text>'
                     for latency in latencies)
        for i, name in enumerate(names):
            colour = COLOURS[i % len(COLOURS)]
            rows = [s["overall"][name] for s in sweep.values()]
            line = " ".join(f"{x(latency)},{y(value(r))}" for latency, r in zip(latencies, rows))
            parts.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>')
            for latency, r in zip(latencies, rows):
                if interval:
                    low, high = r["ci95"]
                    parts.append(f'<line x1="{x(latency)}" y1="{y(low)}" x2="{x(latency)}" y2="{y(high)}" '
                                 f'stroke="{colour}" opacity="0.5"/>')
                parts.append(f'<circle cx="{x(latency)}" cy="{y(value(r))}" r="3" fill="{colour}"/>')

    panel(0, "success (95% CI), pooled over tasks", 1.0, lambda r: r["success_rate"], True)
    panel(panel_w, "mean jump at chunk switches", top_jump, lambda r: r["boundary_jump_mean"], False)
    _write_svg(parts + _legend(names, 2 * panel_w + 10, margin), path)
