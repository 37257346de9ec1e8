"""A closed-loop evaluation report (snapflow_ros.sim.evaluation) as a fixed-width text table:
per task and policy the success rate, its 95% interval, latency percentiles, the mean jump at
chunk switches and the mean jerk of the executed targets (robot units), then the overall rows.
sim-eval prints it to stderr, sim-demo under its run."""

from __future__ import annotations

HEADER = (f"{'task':<14} {'policy':<20} {'success':>8} {'95% CI':>15} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'jump':>8} {'jerk':>10}")


def _row(task: str, policy: str, success_rate: float, ci95: tuple[float, float], latencies_ms: list[float]) -> str:
    low, high = ci95
    interval = f"[{low:.0%}, {high:.0%}]"
    return (f"{task:<14} {policy:<20} {success_rate:>7.0%} {interval:>15} "
            + " ".join(f"{ms:>8.2f}" for ms in latencies_ms))


def format_table(report: dict) -> str:
    """`report` has "tasks" (task -> policy -> row, as evaluate_task returns) and "overall"."""
    lines = [HEADER]
    for task, rows in report["tasks"].items():
        for name, r in rows.items():
            motion = (f" {r['boundary_jump']['mean']:>8.4f} {r['mean_jerk']:>10.1f}"
                      if "boundary_jump" in r else "")  # (reports written before these existed)
            lines.append(_row(task, name, r["success_rate"], r["ci95"],
                              [r["latency_ms"]["p50"], r["latency_ms"]["p95"]]) + motion)
    for name, r in report["overall"].items():
        lines.append(_row("overall", name, r["success_rate"], r["ci95"], [r["latency_ms_p50_mean"]]))
    return "\n".join(lines)
