"""Real-time chunking where the node serves: a policy distilled with --max-delay continues the
committed actions (torch and the per-action-time ONNX export alike), guided RTC inpaints them
(torch only), a policy without a trained prefix ignores them, and an old export refuses them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from snapflow_distill.synthetic import make_dataset, task_config
from snapflow_distill.trainer import TrainConfig, Trainer
from snapflow_ros.errors import ConfigError
from snapflow_ros.export.graphs import ExpertGraph
from snapflow_ros.export.manifest import MANIFEST
from snapflow_ros.export.onnx_export import _export, export_policy
from snapflow_ros.families.builtin import BuiltinVLA
from snapflow_ros.families.registry import load_policy
from snapflow_ros.policy.chunk_executor import ChunkExecutor, ExecutorConfig
from snapflow_ros.policy.observation import Observation
from snapflow_ros.runtime.serving import Continuation, chunk_continuation, load_served_policy

MAX_DELAY = 3


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Two steps of SnapFlow, with and without committed prefixes (the mechanism, not the skill)."""
    root = tmp_path_factory.mktemp("rtc")
    data = make_dataset(32, seed=3)[0]
    paths = {}
    for name, max_delay in (("rtc", MAX_DELAY), ("plain", 0)):
        torch.manual_seed(0)
        policy = BuiltinVLA(task_config(width=32, num_layers=1))
        policy.state_normalizer.fit(data.states)
        policy.action_normalizer.fit(data.actions)
        trainer = Trainer(policy, data, TrainConfig(objective="snapflow", steps=2, batch_size=8, max_delay=max_delay,
                                                    checkpoint_every=0), root / name)
        paths[name] = trainer.run()
    return paths


def _observation() -> Observation:
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    return Observation(state=np.array([0.1, 0.2, 0.3, 0.4]), stamp_ns=1, images={"front": image},
                       instruction="reach the green target")


UPCOMING = np.linspace(-0.5, 0.5, 10, dtype=np.float32).reshape(5, 2)  # 5 actions left of the chunk in force


def test_a_student_distilled_with_a_prefix_continues_the_committed_actions(checkpoints):
    served = load_served_policy(checkpoints["rtc"])
    assert served.max_delay == MAX_DELAY and served.steps == 1
    plain = served.predict(_observation(), seed=2)
    continued = served.predict(_observation(), seed=2, continuation=Continuation(UPCOMING, 2))
    np.testing.assert_allclose(continued[:2], UPCOMING[:2], atol=1e-5)  # normalised and back
    assert not np.allclose(continued[2:], plain[2:], atol=1e-4)  # the rest is generated from them
    capped = served.predict(_observation(), seed=2, continuation=Continuation(UPCOMING, 7))
    np.testing.assert_allclose(capped[:MAX_DELAY], UPCOMING[:MAX_DELAY], atol=1e-5)  # no more than trained
    assert not np.allclose(capped[MAX_DELAY], UPCOMING[MAX_DELAY], atol=1e-3)
    with pytest.raises(ConfigError, match="upcoming actions must be"):
        served.predict(_observation(), continuation=Continuation(np.zeros((3, 5)), 2))


def test_a_chunk_in_force_that_runs_out_is_continued_by_its_last_action(checkpoints):
    served = load_served_policy(checkpoints["rtc"])
    continued = served.predict(_observation(), seed=2, continuation=Continuation(UPCOMING[:1], 3))
    np.testing.assert_allclose(continued[:3], np.repeat(UPCOMING[:1], 3, axis=0), atol=1e-5)


def test_without_a_trained_prefix_a_continuation_changes_nothing(checkpoints):
    served = load_served_policy(checkpoints["plain"])
    assert served.max_delay == 0
    np.testing.assert_array_equal(served.predict(_observation(), seed=4),
                                  served.predict(_observation(), seed=4, continuation=Continuation(UPCOMING, 2)))


def test_guided_rtc_pulls_the_teacher_towards_what_executes(checkpoints):
    guided = load_served_policy(checkpoints["plain"], steps=10, guided=True)
    plain = load_served_policy(checkpoints["plain"], steps=10)
    assert guided.max_delay == 7  # any committed prefix shorter than the chunk
    unguided = plain.predict(_observation(), seed=5)
    inpainted = guided.predict(_observation(), seed=5, continuation=Continuation(UPCOMING, 2))
    gap = lambda actions: np.abs(actions[:2] - UPCOMING[:2]).mean()  # noqa: E731
    assert gap(inpainted) < 0.5 * gap(unguided)
    np.testing.assert_array_equal(guided.predict(_observation(), seed=5), unguided)  # nothing to inpaint


def test_the_export_serves_plain_and_prefixed_chunks_with_one_expert_graph(checkpoints, tmp_path):
    export = tmp_path / "onnx"
    manifest = export_policy(checkpoints["rtc"], export)
    assert manifest.per_action_time and manifest.max_delay == MAX_DELAY
    torch_policy, ort_policy = load_served_policy(checkpoints["rtc"]), load_served_policy(export, "onnxruntime")
    assert ort_policy.max_delay == MAX_DELAY
    for continuation in (None, Continuation(UPCOMING, 2)):
        np.testing.assert_allclose(ort_policy.predict(_observation(), seed=6, continuation=continuation),
                                   torch_policy.predict(_observation(), seed=6, continuation=continuation), atol=1e-4)
    with pytest.raises(ConfigError, match="backend torch only"):
        load_served_policy(export, "onnxruntime", guided=True)


def test_an_export_from_before_per_action_time_refuses_a_prefix(checkpoints, tmp_path):
    """An export whose expert takes one flow time per chunk, (B,), as exports were before."""
    export = tmp_path / "old"
    manifest = export_policy(checkpoints["rtc"], export)
    policy = load_policy(checkpoints["rtc"]).eval()
    names = [spec.name for spec in manifest.cache]
    cache = policy.cache_tensors(policy.embed_prefix(policy.prepare(policy.example_batch(1))))
    x = torch.randn(1, policy.chunk_size, policy.noise_dim)
    with torch.no_grad():
        _export(ExpertGraph(policy, names), (x, torch.ones(1), torch.zeros(1), *cache.values()),
                export / "expert.onnx", ["x", "t", "s", *names], ["velocity"], manifest.opset)
    with pytest.raises(ConfigError, match="one flow time per chunk"):
        load_served_policy(export, "onnxruntime")  # the warm-up tries a continuation: refused at load
    (export / MANIFEST).write_text(json.dumps({**json.loads((export / MANIFEST).read_text()), "max_delay": 0}))
    assert load_served_policy(export, "onnxruntime").predict(_observation()).shape == (8, 2)  # plain chunks work


def test_the_executor_hands_the_policy_what_executes_during_inference(checkpoints):
    served = load_served_policy(checkpoints["rtc"])
    ms = 1_000_000
    chunks = ChunkExecutor(ExecutorConfig(action_dt_s=0.05, chunking="rtc"))
    assert chunk_continuation(chunks, served, 0) is None  # nothing in force yet
    chunks.accept(np.arange(16, dtype=np.float32).reshape(8, 2), 0, 110 * ms, served.policy_id)  # 110 ms late
    continuation = chunk_continuation(chunks, served, 200 * ms)
    assert continuation.delay == 3  # ceil(110 / 50), within the trained 3
    np.testing.assert_array_equal(continuation.upcoming[:, 0], [8, 10, 12, 14])  # from 200 ms on
    plain = ChunkExecutor(ExecutorConfig(action_dt_s=0.05))
    plain.accept(np.zeros((8, 2)), 0, 0, served.policy_id)
    assert chunk_continuation(plain, served, 0) is None
