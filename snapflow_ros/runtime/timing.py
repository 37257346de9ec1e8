"""Latency measurement: every probe timed in turn, round after round, so that machine noise
hits all of them alike and ratios taken from one run are fair."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def percentiles(latencies_ms: list[float]) -> dict[str, float]:
    """p50, p95 and p99 (empty without samples)."""
    return {f"p{q}": float(np.percentile(latencies_ms, q)) for q in (50, 95, 99)} if len(latencies_ms) else {}


def measure_interleaved(probes: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                        synchronize: Callable[[], object] | None = None) -> dict[str, dict[str, float]]:
    """name -> {p50, p95, p99, mean} in milliseconds. `synchronize` (for example
    torch.cuda.synchronize) runs inside each timed call: asynchronous GPU work would otherwise be
    charged to whichever probe happens to wait for it next."""
    wait = synchronize or (lambda: None)
    for _ in range(warmup):
        for probe in probes.values():
            probe()
    wait()
    times: dict[str, list[float]] = {name: [] for name in probes}
    for _ in range(repeats):
        for name, probe in probes.items():
            start = time.perf_counter()
            probe()
            wait()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: percentiles(v) | {"mean": float(np.mean(v))} for name, v in times.items()}
