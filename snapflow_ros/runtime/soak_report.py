"""What a soak run measured, summarised: chunks expected vs published outside hold periods, gaps,
latency, the node process's memory and file descriptors per minute with their slopes, and the
checks a long unattended run must pass. Pure Python: `snapflow soak` (ros/soak.py) records."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from snapflow_ros.runtime.timing import percentiles

RSS_SLOPE_LIMIT_MB_PER_10_MIN = 1.0


@dataclass
class SoakRecord:
    """Raw observations of one run; times in seconds since the measured start (monotonic)."""

    duration_s: float
    chunk_rate_hz: float
    warmup_s: float
    chunks: list[tuple[float, float, float]] = field(default_factory=list)  # (t, inference ms, stamp->received ms)
    holds: list[tuple[float, float]] = field(default_factory=list)         # [on, off) windows
    process: list[tuple[float, float, int]] = field(default_factory=list)  # (t, rss MB, open fds)
    load: list[tuple[float, float]] = field(default_factory=list)          # (t, machine 1-min load average)
    swaps: list[dict] = field(default_factory=list)
    jobs: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _held(t: float, holds: list[tuple[float, float]], margin_s: float) -> bool:
    return any(on - margin_s <= t <= off + margin_s for on, off in holds)


def _slope_per_10_min(points: list[tuple[float, float]]) -> float | None:
    if len(points) < 2 or points[-1][0] - points[0][0] < 60.0:
        return None
    t, v = np.array(points).T
    return float(np.polyfit(t, v, 1)[0] * 600.0)


def timer_slots(times: list[float], period: float) -> tuple[list[int], list[float]]:
    """Each chunk's tick of the node's chunk timer, and how late it arrived (s) against the fastest
    arrival so far. The timer keeps its phase (rcl schedules tick k at start + k*period, and a tick
    that comes during inference is served right after it), so a chunk that arrives late still
    answers its own tick; a tick without a chunk is a missed chunk. A chunk a period behind (less
    2%, for rounding) is counted as the next tick's, which counts its own tick as missed."""
    slots: list[int] = []
    lateness: list[float] = []
    on_time = None  # when a chunk of the current tick arrives at the fastest seen
    for t in times:
        if on_time is None:
            slots.append(0)
            on_time = t
        else:
            ticks = max(1, int(np.floor((t - on_time) / period + 0.02)))
            slots.append(slots[-1] + ticks)
            on_time = min(on_time + ticks * period, t)
        lateness.append(t - on_time)
    return slots, lateness


def summarise(record: SoakRecord) -> dict:
    period = 1.0 / record.chunk_rate_hz
    held_s = sum(min(off, record.duration_s) - on for on, off in record.holds if on < record.duration_s)
    times = [t for t, _, _ in record.chunks]

    def explained(a: float, b: float) -> bool:  # by a hold, with a chunk period of slack on each side
        return any(on - period <= b and a <= off + period for on, off in record.holds)

    gaps = [(a, b - a) for a, b in zip(times, times[1:]) if not explained(a, b)]
    slots, lateness = timer_slots(times, period)
    # Ticks without a chunk between two chunks, unless a hold explains them.
    missed = sum(s1 - s0 - 1 for a, b, s0, s1 in zip(times, times[1:], slots, slots[1:]) if not explained(a, b))
    lateness = [x for x, t in zip(lateness, times) if not explained(t, t)]
    while_held = [t for t in times if _held(t, record.holds, -period)]  # strictly inside a hold
    minutes = []
    for minute in range(int(np.ceil(record.duration_s / 60.0))):
        rows = [c for c in record.chunks if minute * 60 <= c[0] < (minute + 1) * 60]
        samples = [p for p in record.process if minute * 60 <= p[0] < (minute + 1) * 60]
        load = [v for t, v in record.load if minute * 60 <= t < (minute + 1) * 60]
        minutes.append({
            "minute": minute, "chunks": len(rows),
            "inference_ms": percentiles([r[1] for r in rows]),
            "observation_to_received_ms": percentiles([r[2] for r in rows]),
            "rss_mb": float(np.mean([s[1] for s in samples])) if samples else None,
            "open_fds": int(max(s[2] for s in samples)) if samples else None,
            "machine_load_1min": float(np.mean(load)) if load else None,  # what else ran beside the node
        })
    settled = [p for p in record.process if p[0] >= record.warmup_s]
    rss_slope = _slope_per_10_min([(t, rss) for t, rss, _ in settled])
    fds = [f for _, _, f in settled]
    swaps_done = [s for s in record.swaps if s.get("completed_after_s") is not None]
    jobs_done = [j for j in record.jobs if j.get("state") == "SUCCEEDED"]
    checks = {
        "no_missed_chunks_outside_holds": missed == 0,
        "nothing_published_while_held": not while_held,
        f"rss_slope_below_{RSS_SLOPE_LIMIT_MB_PER_10_MIN:g}_mb_per_10_min":
            None if rss_slope is None else rss_slope < RSS_SLOPE_LIMIT_MB_PER_10_MIN,
        "open_fds_flat": None if not fds else max(fds) - min(fds) <= 2,
        "every_swap_completed": len(swaps_done) == len(record.swaps),
        "every_job_succeeded": len(jobs_done) == len(record.jobs),
        "no_errors": not record.errors,
    }
    return {
        "duration_s": record.duration_s, "chunk_rate_hz": record.chunk_rate_hz, "warmup_s": record.warmup_s,
        "chunks": {"published": len(times), "expected_outside_holds": int(round((record.duration_s - held_s)
                                                                                   * record.chunk_rate_hz)),
                   "missed_outside_holds": missed, "published_while_held": len(while_held),
                   "longest_gap_outside_holds_s": max((g for _, g in gaps), default=None),
                   # Published, but over half a period after their tick's fastest arrival.
                   "late_outside_holds": sum(x > period / 2 for x in lateness),
                   "max_lateness_outside_holds_s": max(lateness, default=None)},
        "held_s": held_s, "holds": len(record.holds),
        "latency_ms": {"inference": percentiles([c[1] for c in record.chunks]),
                       "observation_to_received": percentiles([c[2] for c in record.chunks])},
        "process": {"rss_mb_start": settled[0][1] if settled else None,
                    "rss_mb_end": settled[-1][1] if settled else None,
                    "rss_slope_mb_per_10_min": rss_slope,
                    "open_fds_min": min(fds, default=None), "open_fds_max": max(fds, default=None),
                    "open_fds_slope_per_10_min": _slope_per_10_min([(t, f) for t, _, f in settled])},
        "swaps": {"requested": len(record.swaps), "completed": len(swaps_done),
                  "completed_after_s": percentiles([s["completed_after_s"] for s in swaps_done])},
        "jobs": {"started": len(record.jobs), "succeeded": len(jobs_done), "each": record.jobs},
        "per_minute": minutes,
        "errors": record.errors,
        "checks": checks,
        "passed": all(v is not False for v in checks.values()),
    }


def write_soak_plot(report: dict, path: Path) -> None:
    """Four panels over the minutes of the run: chunks, latency p50/p99, RSS, open fds."""
    rows = report["per_minute"]
    panels = [("chunks per minute", [("published", [r["chunks"] for r in rows])]),
              ("observation -> chunk received (ms)",
               [(q, [r["observation_to_received_ms"].get(q) for r in rows]) for q in ("p50", "p99")]),
              ("node RSS (MB)", [("rss", [r["rss_mb"] for r in rows])]),
              ("node open file descriptors", [("fds", [r["open_fds"] for r in rows])])]
    width, height, margin = 420, 260, 50
    colours = ("#1f77b4", "#d62728")
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * width}" height="{2 * height}" '
             'font-family="sans-serif" font-size="12">', '<rect width="100%" height="100%" fill="white"/>']
    for index, (title, lines) in enumerate(panels):
        left, top = (index % 2) * width, (index // 2) * height
        values = [v for _, series in lines for v in series if v is not None]
        low, high = (min(values), max(values)) if values else (0.0, 1.0)
        low, high = (low - 1, high + 1) if high - low < 1e-9 else (low, high)
        span = max(len(rows) - 1, 1)
        x0, x1 = left + margin, left + width - margin / 2
        y0, y1 = top + height - margin, top + margin

        def x(i: int, x0=x0, x1=x1, span=span) -> float:
            return x0 + i / span * (x1 - x0)

        def y(v: float, y0=y0, y1=y1, low=low, high=high) -> float:
            return y0 + (v - low) / (high - low) * (y1 - y0)

        parts += [f'<text x="{left + width / 2}" y="{top + 20}" text-anchor="middle">{title}</text>',
                  f'<text x="{left + margin - 4}" y="{y(high) + 4}" text-anchor="end">{high:.4g}</text>',
                  f'<text x="{left + margin - 4}" y="{y(low) + 4}" text-anchor="end">{low:.4g}</text>',
                  f'<text x="{left + width / 2}" y="{top + height - 15}" text-anchor="middle">minute</text>',
                  f'<line x1="{x(0)}" y1="{y(low)}" x2="{x(span)}" y2="{y(low)}" stroke="black"/>']
        for colour, (name, series) in zip(colours, lines):
            points = " ".join(f"{x(i)},{y(v)}" for i, v in enumerate(series) if v is not None)
            parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
            if len(lines) > 1:
                parts.append(f'<text x="{left + width - 40}" y="{top + 40 + 14 * lines.index((name, series))}" '
                             f'fill="{colour}">{name}</text>')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([*parts, "</svg>"]) + "\n")
