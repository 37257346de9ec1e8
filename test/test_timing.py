"""Latency probes: interleaved, and charged with the device work they queued."""

from __future__ import annotations

import pytest

from snapflow_ros.runtime import timing


class FakeClock:
    """perf_counter that only moves when a probe or the synchroniser says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def test_synchronize_is_inside_each_timed_call(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", clock.perf_counter)
    events: list[str] = []

    def probe(name: str, seconds: float):
        def run() -> None:
            events.append(name)
            clock.now += seconds
        return run

    def synchronize() -> None:  # the queued GPU work finishing: 5 ms each time
        events.append("sync")
        clock.now += 5e-3

    result = timing.measure_interleaved({"a": probe("a", 1e-3), "b": probe("b", 2e-3)}, repeats=3,
                                        warmup=1, synchronize=synchronize)
    assert events == ["a", "b", "sync"] + ["a", "sync", "b", "sync"] * 3
    assert result["a"]["p50"] == pytest.approx(6.0) and result["b"]["mean"] == pytest.approx(7.0)

    events.clear()
    unsynchronised = timing.measure_interleaved({"a": probe("a", 1e-3)}, repeats=2, warmup=0)
    assert events == ["a", "a"] and unsynchronised["a"]["p99"] == pytest.approx(1.0)
