"""SnapFlow engine invariants on the built-in VLA: zero-init student = teacher, the flow-matching
loss is the teacher's (t=1 noise) loss, the consistency target is the model's own two-step
Euler rollout, phi learns, and training resumes bit for bit."""

from __future__ import annotations

import pytest
import torch

from snapflow_distill.loss import consistency_target, flow_matching_loss
from snapflow_distill.synthetic import make_dataset, task_config
from snapflow_distill.trainer import TrainConfig, Trainer
from snapflow_ros.data.chunks import InMemoryChunkDataset
from snapflow_ros.families.builtin import BuiltinVLA
from snapflow_ros.families.registry import load_policy
from snapflow_ros.files import save_policy
from snapflow_ros.flow.sampling import euler_sample


@pytest.fixture(scope="module")
def data() -> InMemoryChunkDataset:
    return make_dataset(64, seed=3)[0]


def _policy(data, seed=0) -> BuiltinVLA:
    torch.manual_seed(seed)
    policy = BuiltinVLA(task_config(width=32, num_layers=1))
    policy.state_normalizer.fit(data.states)
    policy.action_normalizer.fit(data.actions)
    return policy


def _inputs_and_cache(policy, data, n=8):
    inputs = policy.prepare(data.batch(torch.arange(n)))
    return inputs, policy.embed_prefix(inputs)


def _randomize_phi(policy) -> None:
    with torch.no_grad():
        policy.target_time.linear_out.weight.normal_(0, 0.5)
        policy.target_time.linear_out.bias.normal_(0, 0.5)


def _randomize_trained(policy) -> None:
    with torch.no_grad():
        for p in policy.expert_parameters():
            p.normal_(0, 0.5)


def test_student_equals_teacher_at_step_zero(data, tmp_path):
    teacher = _policy(data).eval()
    student = load_policy(save_policy(teacher, tmp_path / "teacher")).eval()
    Trainer(student, data, TrainConfig(objective="snapflow", steps=1), tmp_path / "run")  # no step
    _, cache_t = _inputs_and_cache(teacher, data)
    _, cache_s = _inputs_and_cache(student, data)
    noise = torch.randn(8, 8, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for steps in (1, 10):
            assert torch.equal(euler_sample(teacher, cache_t, noise, steps),
                               euler_sample(student, cache_s, noise, steps))
        ones = torch.ones(8)
        # phi is zero: the target time s changes nothing yet.
        assert torch.equal(student.velocity(noise, ones, ones, cache_s),
                           student.velocity(noise, ones, 0 * ones, cache_s))


def test_flow_matching_loss_is_the_teachers_loss(data):
    """x_t = t*eps + (1-t)*a, target eps - a (LeRobot: t = 1 is noise), written out by hand."""
    policy = _policy(data)
    inputs, cache = _inputs_and_cache(policy, data)
    a = inputs["actions"]
    g = torch.Generator().manual_seed(2)
    eps, t = torch.randn(a.shape, generator=g), torch.rand(8, generator=g)
    ours = flow_matching_loss(policy, cache, a, inputs["action_mask"], eps, t)
    x_t = t[:, None, None] * eps + (1 - t[:, None, None]) * a
    by_hand = ((policy.velocity(x_t, t, t, cache) - (eps - a)) ** 2).mean()
    torch.testing.assert_close(ours, by_hand, rtol=0, atol=0)
    # A sign-flipped convention (t = 0 noise) gives a different loss: the test can fail.
    flipped = ((policy.velocity((1 - t[:, None, None]) * eps + t[:, None, None] * a, t, t, cache)
                - (a - eps)) ** 2).mean()
    assert not torch.allclose(ours, flipped)


def test_consistency_target_is_two_step_euler_rollout(data):
    policy = _policy(data)
    _randomize_phi(policy)  # s now matters: the target must use s = t at both points
    _, cache = _inputs_and_cache(policy, data)
    x1 = torch.randn(8, 8, 2, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ones = torch.ones(8)
        assert not torch.allclose(policy.velocity(x1, ones, ones, cache),
                                  policy.velocity(x1, ones, 0 * ones, cache))
        x_half = x1 - 0.5 * policy.velocity(x1, ones, ones, cache)
        x0 = x_half - 0.5 * policy.velocity(x_half, 0.5 * ones, 0.5 * ones, cache)
    torch.testing.assert_close(consistency_target(policy, cache, x1), x1 - x0)


def test_phi_first_layer_gets_gradients_after_one_step(data, tmp_path):
    policy = _policy(data)
    trainer = Trainer(policy, data, TrainConfig(objective="snapflow", steps=2, batch_size=8,
                                                warmup_steps=1, alpha=0.5), tmp_path)
    phi = policy.target_time
    trainer.train_step()
    # Step 1: zero last layer blocks the first layer's gradient, but the last layer moves.
    assert torch.count_nonzero(phi.linear_in.weight.grad) == 0
    assert torch.count_nonzero(phi.linear_out.weight) > 0
    trainer.train_step()
    assert torch.count_nonzero(phi.linear_in.weight.grad) > 0


def test_snapflow_trains_only_the_expert_side(data, tmp_path):
    policy = _policy(data)
    backbone_before = {k: v.clone() for k, v in policy.state_dict().items()
                       if k.startswith(("patch_", "token_", "state_proj", "prefix_blocks"))}
    trainer = Trainer(policy, data, TrainConfig(objective="snapflow", steps=3, batch_size=8), tmp_path)
    for _ in range(3):
        trainer.train_step()
    after = policy.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in backbone_before.items())
    assert not torch.equal(trainer.parameters[0], _policy(data).expert_parameters()[0])


def test_teacher_training_keeps_phi_at_zero(data, tmp_path):
    policy = _policy(data)
    trainer = Trainer(policy, data, TrainConfig(objective="flow_matching", steps=2, batch_size=8), tmp_path)
    trainer.train_step()
    trainer.train_step()
    assert torch.count_nonzero(policy.target_time.linear_out.weight) == 0


@pytest.mark.parametrize("objective", ["flow_matching", "snapflow"])
def test_resume_continues_bit_for_bit(data, tmp_path, objective):
    config = TrainConfig(objective=objective, steps=6, batch_size=8, warmup_steps=2,
                         checkpoint_every=3, log_every=1, ema_decay=0.9)
    straight = Trainer(_policy(data), data, config, tmp_path / "straight").run()

    class Crash(Exception):
        pass

    def crash_at_step_4(progress):
        if progress.step == 4:
            raise Crash

    with pytest.raises(Crash):
        Trainer(_policy(data), data, config, tmp_path / "resumed", progress=crash_at_step_4).run()
    assert (tmp_path / "resumed" / "checkpoints" / "step-00000003").is_dir()
    # A fresh process would start from different trained weights: resume must overwrite them.
    # Distillation keeps only the trained tensors (the rest is the teacher's), a teacher all of them.
    fresh = _policy(data, seed=99 if objective == "flow_matching" else 0)
    if objective == "snapflow":
        _randomize_trained(fresh)
    resumed = Trainer(fresh, data, config, tmp_path / "resumed").run()
    a, b = load_policy(straight).state_dict(), load_policy(resumed).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_several_cameras_and_resized_images_share_one_prefix():
    from snapflow_ros.errors import InputError
    from snapflow_ros.families.builtin import BuiltinVLAConfig

    torch.manual_seed(0)
    policy = BuiltinVLA(BuiltinVLAConfig(cameras=("left", "right"), width=32, num_layers=1))
    images = {"left": torch.randint(0, 255, (2, 48, 64, 3), dtype=torch.uint8),
              "right": torch.randint(0, 255, (2, 32, 32, 3), dtype=torch.uint8)}
    batch = {"images": images, "instruction": ["pick", "place"], "state": torch.zeros(2, 4)}
    inputs = policy.prepare(batch)
    assert inputs["images"].shape == (2, 2, 3, 32, 32)
    assert inputs["images"].min() >= -1 and inputs["images"].max() <= 1
    cache = policy.embed_prefix(inputs)
    # 16 patches per camera + max_instruction_tokens (64) instruction bytes + 1 state token
    assert cache.keys[0].shape[2] == 2 * 16 + 64 + 1
    assert cache.mask[0].sum() == 32 + len("pick") + 1
    with pytest.raises(InputError, match=r"cameras \['right'\] missing"):
        policy.prepare({**batch, "images": {"left": images["left"]}})


def test_gradient_checkpointing_gives_the_same_gradients(data, tmp_path):
    grads = []
    for checkpointing in (False, True):
        config = TrainConfig(objective="snapflow", steps=1, batch_size=8, gradient_checkpointing=checkpointing)
        trainer = Trainer(_policy(data), data, config, tmp_path / str(checkpointing))
        _randomize_phi(trainer.policy)
        trainer.train_step()
        grads.append([p.grad.clone() for p in trainer.parameters])
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(*grads))
