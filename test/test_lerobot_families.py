"""LeRobot pi0, pi0.5 and SmolVLA (tiny, built offline) as SnapFlow teachers and students:
our sampling through the contract equals LeRobot's own, the student starts as the teacher, our
flow-matching loss is LeRobot's training loss, a short distillation lowers the consistency loss,
students reload (also with LeRobot's own loader) and bad checkpoints fail loudly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from snapflow_distill.loss import consistency_loss, flow_matching_loss
from snapflow_distill.synthetic import make_dataset
from snapflow_distill.trainer import TrainConfig, Trainer
from snapflow_ros.errors import CheckpointError
from snapflow_ros.families.lerobot.builders import build_lerobot_checkpoint
from snapflow_ros.families.lerobot.construction import pi_architecture
from snapflow_ros.families.registry import load_policy
from snapflow_ros.files import save_policy
from snapflow_ros.flow.sampling import euler_sample

FAMILIES = ["pi0", "pi05", "smolvla"]


@pytest.fixture(scope="module")
def data():
    return make_dataset(96, seed=5)[0]


@pytest.fixture(scope="module")
def teachers(data, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lerobot_teachers")
    return {family: build_lerobot_checkpoint(family, root / family, states=data.states, actions=data.actions,
                                       cameras=("front",), instructions=data.instructions, chunk_size=8)
            for family in FAMILIES}


def _noise(policy, n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, policy.chunk_size, policy.noise_dim, generator=torch.Generator().manual_seed(seed))


def _lerobot_batch(policy, batch):
    return {"observation.images.front": batch["images"]["front"].permute(0, 3, 1, 2).float() / 255.0,
            "observation.state": batch["state"], "task": list(batch["instruction"])}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("steps", [1, 10])
def test_sampling_equals_lerobot_predict_action_chunk(teachers, data, family, steps):
    policy = load_policy(teachers[family])
    if family == "smolvla":
        policy.lerobot.config.num_steps = steps  # SmolVLA reads its step count from the config
    batch = data.batch(torch.arange(4))
    noise = _noise(policy, 4)
    with torch.no_grad():
        ours = policy.unnormalize_actions(
            euler_sample(policy, policy.embed_prefix(policy.prepare(batch)), noise, steps))
        processed = policy.preprocessor(_lerobot_batch(policy, batch))
        policy.lerobot.reset()
        kwargs = {} if family == "smolvla" else {"num_steps": steps}
        reference = policy.postprocessor(policy.lerobot.predict_action_chunk(processed, noise=noise, **kwargs))
    assert ours.shape == reference.shape == (4, 8, 2)
    if family == "smolvla":
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    else:
        assert torch.equal(ours, reference)


@pytest.mark.parametrize("family", FAMILIES)
def test_student_equals_teacher_at_step_zero_and_phi_takes_effect(teachers, data, family, tmp_path):
    teacher, student = load_policy(teachers[family]), load_policy(teachers[family])
    Trainer(student, data, TrainConfig(objective="snapflow", steps=1), tmp_path)  # no step taken
    batch = data.batch(torch.arange(3))
    x = _noise(student, 3)
    ones = torch.ones(3)
    with torch.no_grad():
        cache_t, cache_s = (p.embed_prefix(p.prepare(batch)) for p in (teacher, student))
        v_teacher = teacher.velocity(x, ones, ones, cache_t)
        assert torch.equal(v_teacher, student.velocity(x, ones, 0 * ones, cache_s))
        assert torch.equal(euler_sample(teacher, cache_t, x, 10), euler_sample(student, cache_s, x, 10))
        student.target_time.linear_out.weight.normal_(0, 0.5)
        assert not torch.allclose(v_teacher, student.velocity(x, ones, 0 * ones, cache_s))


@pytest.mark.parametrize("family", FAMILIES)
def test_flow_matching_loss_equals_lerobot_training_loss(teachers, data, family):
    policy = load_policy(teachers[family])
    batch = data.batch(torch.arange(4))
    generator = torch.Generator().manual_seed(3)
    noise = _noise(policy, 4, seed=1)
    t = torch.rand(4, generator=generator) * 0.9 + 0.05
    with torch.no_grad():
        inputs = policy.prepare(batch)
        ours = flow_matching_loss(policy, policy.embed_prefix(inputs), inputs["actions"],
                                  inputs["action_mask"], noise, t)
        model = policy.lerobot.model
        if family == "smolvla":
            processed = policy.preprocessor({**_lerobot_batch(policy, batch), "action": batch["actions"]})
            theirs, _ = policy.lerobot.forward(processed, noise=noise, time=t)
        else:  # LeRobot's model forward: the joint prefix+suffix pass it trains with
            args = [inputs["images"], inputs["img_masks"], inputs["lang_tokens"], inputs["lang_masks"]]
            if family == "pi0":
                args.append(inputs["state"])
            losses = model.forward(*args, inputs["actions"], noise, t)
            theirs = losses[:, :, : policy.action_dim].mean()
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_short_distillation_lowers_consistency_loss_and_reloads(teachers, data, family, tmp_path):
    student = load_policy(teachers[family])
    eval_batch = data.batch(torch.arange(16))

    def consistency() -> float:
        with torch.no_grad():
            inputs = student.prepare(eval_batch)
            return float(consistency_loss(student, student.embed_prefix(inputs), _noise(student, 16, seed=9),
                                          inputs["action_mask"]))

    before = consistency()
    config = TrainConfig(objective="snapflow", steps=25, batch_size=8, learning_rate=3e-3,
                         warmup_steps=2, alpha=0.25, consistency_weight=1.0, checkpoint_every=0)
    path = Trainer(student, data, config, tmp_path / "run").run()
    after = consistency()
    assert after < 0.8 * before, (before, after)
    frozen = [n for n, p in student.named_parameters() if "vision_tower" in n or "vlm.model" in n]
    assert frozen and all(not dict(student.named_parameters())[n].requires_grad for n in frozen)

    reloaded = load_policy(path)
    assert torch.count_nonzero(reloaded.target_time.linear_out.weight) > 0
    assert json.loads((path / "provenance.json").read_text())["objective"] == "snapflow"
    x, ones = _noise(student, 2), torch.ones(2)
    with torch.no_grad():
        cache_a = student.eval().embed_prefix(student.prepare(data.batch(torch.arange(2))))
        cache_b = reloaded.embed_prefix(reloaded.prepare(data.batch(torch.arange(2))))
        assert torch.equal(student.velocity(x, ones, 0 * ones, cache_a),
                           reloaded.velocity(x, ones, 0 * ones, cache_b))


@pytest.mark.parametrize("family", ["pi05", "smolvla"])
def test_student_directory_stays_readable_by_lerobot(teachers, tmp_path, family):
    student = load_policy(teachers[family])
    path = save_policy(student, tmp_path / "student")
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "model.safetensors", "policy_preprocessor.json", "policy_postprocessor.json",
            "snapflow_target_time.safetensors", "snapflow.json", "tokenizer"} <= names
    policy_class = type(student.lerobot)
    spec = json.loads((path / "snapflow.json").read_text())["architecture"]
    from lerobot.configs.policies import PreTrainedConfig

    config = PreTrainedConfig.from_pretrained(path)
    student.adjust_config(config, {"vlm": path / "vlm"} if family == "smolvla" else {})
    with pi_architecture(spec):
        theirs = policy_class.from_pretrained(path, config=config)
    ours = student.lerobot.state_dict()
    assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in ours.items())


def test_missing_weights_fail_loudly_instead_of_random_init(teachers, tmp_path):
    import shutil

    path = tmp_path / "broken"
    shutil.copytree(teachers["pi05"], path)
    weights = load_file(path / "model.safetensors")
    removed = next(k for k in weights if "action_out_proj" in k)
    del weights[removed]
    save_file(weights, path / "model.safetensors")
    with pytest.raises(CheckpointError, match="missing .*action_out_proj"):
        load_policy(path)
    (path / "policy_preprocessor.json").unlink()
    with pytest.raises(CheckpointError, match="policy_preprocessor.json missing"):
        load_policy(path)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_cli_make_tiny_then_distill(family, tmp_path):
    import subprocess
    import sys

    snapflow = str(Path(sys.executable).parent / "snapflow")
    small = ["--samples", "128", "--holdout", "16"]

    def run(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([snapflow, *args], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    run("make-tiny-lerobot", "--family", family, "--output", str(tmp_path / "teacher"), *small)
    run("distill", str(tmp_path / "teacher"), "--output", str(tmp_path / "run"), "--steps", "3",
        "--batch-size", "4", "--checkpoint-every", "0", "--log-every", "1", *small)
    student = load_policy(tmp_path / "run" / "policy")
    assert student.family == family
    assert json.loads((tmp_path / "run" / "policy" / "provenance.json").read_text())["teacher_id"]


@pytest.mark.slow
def test_bench_lerobot_reports_prefix_step_and_ratio(tmp_path):
    import subprocess
    import sys

    report_path = tmp_path / "report.json"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "snapflow"), "bench-lerobot", "--families", "builtin", "pi05",
         "--repeats", "5", "--workdir", str(tmp_path), "--json", str(report_path),
         "--samples", "64", "--holdout", "8"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    families = json.loads(report_path.read_text())["families"]
    assert set(families) == {"builtin", "pi05"}
    for timing in families.values():
        assert {"prefix", "expert_step", "end_to_end_10_steps", "end_to_end_1_steps"} <= set(timing)
        # The ratio is the report's own (timings live in benchmarks, not in test thresholds: a loaded
        # machine may compress it).
        assert timing["ratio_end_to_end_10_over_1"] == pytest.approx(
            timing["end_to_end_10_steps"]["p50"] / timing["end_to_end_1_steps"]["p50"])


_LOAD = ("import sys; from snapflow_ros.families.registry import load_policy; "
         "p = load_policy(sys.argv[1]); print(p.processor.tokenizer_dir)")


def test_checkpoint_without_bundled_tokenizer_gets_it_from_tokenizer_dir_or_hf_cache(teachers, tmp_path):
    """Regression: a real checkpoint bundles no tokenizer/; its students loaded only from the hub."""
    import os
    import shutil
    import subprocess
    import sys

    bare = tmp_path / "bare"
    shutil.copytree(teachers["pi05"], bare)
    shutil.move(bare / "tokenizer", tmp_path / "tok")
    preprocessor = json.loads((bare / "policy_preprocessor.json").read_text())
    for step in preprocessor["steps"]:
        if step["registry_name"] == "tokenizer_processor":
            step["config"]["tokenizer_name"] = "local-test/paligemma-tokenizer"
    (bare / "policy_preprocessor.json").write_text(json.dumps(preprocessor))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hf-cache")}

    with pytest.raises(CheckpointError, match="local-test/paligemma-tokenizer.*neither bundled.*--tokenizer"):
        load_policy(bare)
    snapflow = Path(sys.executable).with_name("snapflow")
    distilled = subprocess.run([str(snapflow), "distill", str(bare), "--tokenizer", str(tmp_path / "tok"),
                                "--output", str(tmp_path / "run"), "--steps", "1", "--batch-size", "4",
                                "--samples", "32", "--holdout", "8", "--device", "cpu"],
                               env=env, capture_output=True, text=True, timeout=600)
    assert distilled.returncode == 0, distilled.stderr[-2000:]
    student = tmp_path / "run" / "policy"
    assert (student / "tokenizer" / "tokenizer.json").is_file()
    fresh = subprocess.run([sys.executable, "-c", _LOAD, str(student)], env=env,
                           capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr[-2000:]

    # The same tokenizer in the local Hugging Face cache (its on-disk layout) is found there.
    repo = tmp_path / "hf-cache" / "models--local-test--paligemma-tokenizer"
    shutil.copytree(tmp_path / "tok", repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    cached = subprocess.run([sys.executable, "-c", _LOAD, str(bare)], env=env, capture_output=True,
                            text=True, timeout=300)
    assert cached.returncode == 0, cached.stderr[-2000:]
    assert "0123abcd" in cached.stdout


@pytest.mark.parametrize("family", ["pi0", "pi05"])
def test_lerobot_gradient_checkpointing_gives_the_plain_gradients(teachers, data, family, tmp_path):
    """Regression: a checkpoint with LeRobot's `gradient_checkpointing: true` failed to distil
    (the prefix cache switched off in train mode, phi(s) lost in recomputation)."""
    import shutil

    from snapflow_distill.loss import snapflow_loss
    from snapflow_distill.trainer import trainable_parameters

    checkpointed = tmp_path / "checkpointed"
    shutil.copytree(teachers[family], checkpointed)
    config = json.loads((checkpointed / "config.json").read_text())
    (checkpointed / "config.json").write_text(json.dumps({**config, "gradient_checkpointing": True}))
    batch = data.batch(torch.arange(6))

    def gradients(path: Path) -> tuple[dict[str, torch.Tensor], int]:
        policy = load_policy(path)
        trainable_parameters(policy, "snapflow")
        with torch.no_grad():
            policy.target_time.linear_out.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
        policy.train()
        layer = policy.lerobot.model.paligemma_with_expert.gemma_expert.model.layers[0]
        calls = []
        layer.register_forward_pre_hook(lambda *_: calls.append(1))  # (recomputation stops early)
        inputs = policy.prepare(batch)
        with torch.no_grad():
            cache = policy.embed_prefix(inputs)
        terms = snapflow_loss(policy, cache, inputs["actions"], inputs["action_mask"], 0.5, 0.1,
                              torch.Generator().manual_seed(0))
        terms.total.backward()
        return {n: p.grad for n, p in policy.named_parameters() if p.grad is not None}, len(calls)

    plain, plain_calls = gradients(teachers[family])
    recomputed, recomputed_calls = gradients(checkpointed)
    assert recomputed_calls > plain_calls  # the expert layers really ran again in backward
    assert plain.keys() == recomputed.keys() and any("target_time" in n for n in plain)
    for name, grad in plain.items():
        torch.testing.assert_close(recomputed[name], grad, rtol=1e-4, atol=1e-6,
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("family", FAMILIES)
def test_serving_refuses_an_instruction_the_tokenizer_would_truncate(teachers, family):
    """prompt_tokens counts the prompt the checkpoint's own steps build (pi0.5 writes the state
    into it) as its tokenizer does: where it fits, the count is the pipeline's attention mask; where
    it does not, the pipeline truncates to tokenizer_max_length and serving refuses instead."""
    import numpy as np

    from snapflow_ros.errors import InputError
    from snapflow_ros.policy.observation import Observation
    from snapflow_ros.runtime.serving import load_served_policy

    served = load_served_policy(teachers[family])
    processor = served.processor
    example = processor.example_batch(1)

    def mask_length(instruction: str) -> int:
        processed = processor.preprocessor(processor._lerobot_batch(example | {"instruction": [instruction]}))
        return int(processed["observation.language.attention_mask"].sum())

    def observation(instruction: str) -> Observation:
        return Observation(state=example["state"][0].numpy(), stamp_ns=0, instruction=instruction,
                           images={c: example["images"][c][0].numpy() for c in processor.cameras})

    short, long = "open the drawer", " ".join(["open the drawer"] * 40)
    (tokens,), limit = processor.prompt_tokens(example | {"instruction": [short]})
    assert 0 < tokens == mask_length(short) <= limit
    assert np.isfinite(served.predict(observation(short))).all()
    (tokens,), limit = processor.prompt_tokens(example | {"instruction": [long]})
    assert tokens > limit == mask_length(long)  # what the policy would read: the first `limit` only
    with pytest.raises(InputError, match=rf"takes {tokens} tokens, .* reads {limit}: it would act on a truncated task"):
        served.predict(observation(long))
