"""Offline evaluation: ground-truth metrics count valid action positions only (padding past an
episode's end does not), and sampling in batches gives the result of one big batch."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from snapflow_distill.evaluate import Candidate, evaluate
from snapflow_distill.synthetic import make_dataset, task_config
from snapflow_ros.families.builtin import BuiltinVLA


@pytest.fixture(scope="module")
def setup():
    data = make_dataset(10, seed=5)[0]
    torch.manual_seed(0)
    policy = BuiltinVLA(task_config(width=16, num_heads=2, num_layers=1))
    policy.state_normalizer.fit(data.states)
    policy.action_normalizer.fit(data.actions)
    return data, [Candidate("teacher@10", policy, 10), Candidate("teacher@1", policy, 1)]


def _report(data, candidates, batch_size, extra=None) -> dict:
    return evaluate(candidates, candidates[0], data, seed=2, latency_repeats=1, extra=extra,
                    batch_size=batch_size)


def _accuracy(report) -> dict:
    return {name: {k: v for k, v in r.items() if k != "latency_ms"} for name, r in report["results"].items()}


def test_ground_truth_metrics_ignore_masked_positions(setup):
    data, candidates = setup
    sampled = []

    def record(actions, batch) -> dict:
        sampled.append(actions)
        return {}

    _report(data, candidates, 4, extra=record)
    one_step = sampled[1]  # teacher@1's actions (candidates in order)
    mask = torch.ones(data.actions.shape[:2], dtype=torch.bool)
    mask[:, 5:] = False  # the last 3 of 8 positions are past the episode end
    truth = torch.where(mask[..., None], one_step, one_step + 10.0)  # wrong only where masked
    padded = replace(data, actions=truth, action_masks=mask)
    r = _report(padded, candidates, 4)["results"]["teacher@1"]
    assert r["mse_vs_ground_truth"] == 0.0
    assert r["cosine_vs_ground_truth"] == pytest.approx(1.0)
    unmasked = _report(replace(padded, action_masks=None), candidates, 4)["results"]["teacher@1"]
    assert unmasked["mse_vs_ground_truth"] == pytest.approx(10.0 ** 2 * 3 / 8, rel=1e-5)


def test_batched_evaluation_equals_one_batch(setup):
    data, candidates = setup
    batched, whole = _report(data, candidates, 3), _report(data, candidates, len(data))
    assert batched["batch_size"] == 3 and whole["batch_size"] == len(data)
    a, b = _accuracy(batched), _accuracy(whole)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == pytest.approx(b[name], rel=1e-5, abs=1e-7), name
