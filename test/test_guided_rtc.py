"""Inference-time guided real-time chunking (snapflow_ros.flow.guidance): LeRobot's prefix
weights, the exact guided step, the unguided loop when nothing is weighted, a bimodal flow pulled
to the previous chunk's mode, and a real tiny policy under no_grad leaving no parameter grads."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import tiny_synthetic_policy
from snapflow_distill.synthetic import make_dataset
from snapflow_ros.errors import ConfigError
from snapflow_ros.flow.guidance import RtcGuidance, guided_euler_integrate
from snapflow_ros.flow.sampling import euler_integrate


def _times(t, like: torch.Tensor) -> torch.Tensor:
    """A time as euler_integrate gives it (a float or a (B,) tensor) -> (B, 1, 1)."""
    return torch.as_tensor(t, dtype=like.dtype, device=like.device).reshape(-1, 1, 1)


def _linear_velocity(matrix: torch.Tensor):
    """v(x, t, s) = (1 + t - s) x M: depends on x (a non-identity Jacobian) and on both times."""
    return lambda x, t, s: (1 + _times(t, x) - _times(s, x)) * (x @ matrix)


# --- weights ----------------------------------------------------------------------------------

@pytest.mark.parametrize("schedule", ["linear", "exp"])
def test_ramp_weights_are_one_on_the_delay_and_reach_zero_by_the_horizon(schedule):
    g = RtcGuidance(delay=3, execution_horizon=7, schedule=schedule)
    w = g.weights(10, 10)
    assert w.shape == (10,) and w.dtype == torch.float32
    assert torch.equal(w[:3], torch.ones(3)) and torch.equal(w[7:], torch.zeros(3))
    assert (w[3:7] > 0).all() and (w[3:7] < 1).all() and (w[2:8].diff() < 0).all()
    lin = torch.tensor([4, 3, 2, 1]) / 5
    expected = lin if schedule == "linear" else lin * torch.expm1(lin) / (math.e - 1)
    torch.testing.assert_close(w[3:7], expected)
    short = g.weights(10, 5)  # only 5 previous actions: the ramp reaches 0 by them
    assert torch.equal(short[:3], torch.ones(3)) and torch.equal(short[5:], torch.zeros(5))
    assert (short[3:5] > 0).all()
    assert torch.equal(g.weights(10, 2), torch.tensor([1.0, 1.0] + [0.0] * 8))  # d clamped too
    assert torch.equal(g.weights(10, 0), torch.zeros(10))


def test_ones_and_zeros_weights():
    assert torch.equal(RtcGuidance(2, 5, schedule="ones").weights(8, 8), torch.tensor([1.0] * 5 + [0.0] * 3))
    assert torch.equal(RtcGuidance(2, 5, schedule="ones").weights(8, 4), torch.tensor([1.0] * 4 + [0.0] * 4))
    # LeRobot's ZEROS: the hard prefix only (1 on the first d), not all zeros.
    assert torch.equal(RtcGuidance(2, 5, schedule="zeros").weights(8, 8), torch.tensor([1.0] * 2 + [0.0] * 6))
    assert torch.equal(RtcGuidance(0, 5, schedule="zeros").weights(8, 8), torch.zeros(8))


@pytest.mark.parametrize("schedule", ["exp", "linear", "ones", "zeros"])
def test_weights_match_lerobot(schedule):
    rtc = pytest.importorskip("lerobot.policies.rtc.modeling_rtc")
    from lerobot.configs import RTCAttentionSchedule
    from lerobot.policies.rtc.configuration_rtc import RTCConfig

    processor = rtc.RTCProcessor(RTCConfig(prefix_attention_schedule=RTCAttentionSchedule[schedule.upper()]))
    for delay, horizon, available in [(3, 6, 8), (3, 10, 8), (7, 4, 8), (0, 5, 8), (2, 6, 4), (1, 1, 8)]:
        ours = RtcGuidance(delay, horizon, schedule=schedule).weights(8, available)
        theirs = processor.get_prefix_weights(delay, min(horizon, available), 8)
        torch.testing.assert_close(ours, theirs, msg=f"{schedule} d={delay} h={horizon} n={available}")


# --- the guided step ------------------------------------------------------------------------

def test_two_guided_steps_follow_the_formula_by_hand():
    """steps = 2: t = 1 (weight beta) then t = 0.5 (weight (1/4 + 1/4) / (1/4) = 2 < beta)."""
    gen = torch.Generator().manual_seed(0)
    matrix = torch.randn(3, 3, generator=gen) * 0.5
    noise, previous = torch.randn(2, 6, 3, generator=gen), torch.randn(2, 4, 3, generator=gen)
    g = RtcGuidance(delay=2, execution_horizon=4, max_guidance_weight=5.0, schedule="linear")
    w = torch.zeros(6)
    w[:4] = g.weights(6, 4)[:4]
    target = torch.cat([previous, torch.zeros(2, 2, 3)], dim=1)
    x = noise
    for t, s, beta in [(1.0, 0.5, 5.0), (0.5, 0.0, 2.0)]:
        mt = (1 + t - s) * matrix
        v = x @ mt
        x0 = x - t * v  # = x (I - t mt)
        err = (target - x0) * w[None, :, None]
        correction = err @ (torch.eye(3) - t * mt).T  # err^T d x0 / dx
        x = x - 0.5 * (v - beta * correction)
    with torch.no_grad():
        out = guided_euler_integrate(_linear_velocity(matrix), noise, 2, previous, g)
    torch.testing.assert_close(out, x)
    assert g.guidance_weight(1.0) == 5.0 and g.guidance_weight(0.5) == 2.0 and g.guidance_weight(0.0) == 0.0


def test_an_x_independent_field_matches_lerobot_denoise_step():
    """Where dv/dx = 0, LeRobot's step (which differentiates only x0 = x - t v through x) and ours agree."""
    rtc = pytest.importorskip("lerobot.policies.rtc.modeling_rtc")
    from lerobot.configs import RTCAttentionSchedule
    from lerobot.policies.rtc.configuration_rtc import RTCConfig

    gen = torch.Generator().manual_seed(1)
    field, x, previous = (torch.randn(2, 8, 3, generator=gen) for _ in range(3))
    previous = previous[:, :6]
    processor = rtc.RTCProcessor(RTCConfig(prefix_attention_schedule=RTCAttentionSchedule.EXP,
                                           max_guidance_weight=4.0, execution_horizon=5))
    g = RtcGuidance(delay=2, execution_horizon=5, max_guidance_weight=4.0, schedule="exp")
    for steps in (1, 4, 10):
        ref = x
        for k in range(steps):
            time = 1.0 + k * (-1.0 / steps)
            v = processor.denoise_step(ref, previous, 2, time, lambda _x, time=time: field * (1 + time))
            ref = ref - v / steps
        with torch.no_grad():
            out = guided_euler_integrate(lambda _x, t, s: field * (1 + t[:, None, None]), x, steps, previous, g)
        torch.testing.assert_close(out, ref)


def test_nothing_weighted_is_the_unguided_euler_loop():
    gen = torch.Generator().manual_seed(2)
    matrix, noise = torch.randn(4, 4, generator=gen) * 0.3, torch.randn(3, 7, 4, generator=gen)
    velocity = _linear_velocity(matrix)
    previous = torch.randn(3, 5, 4, generator=gen)
    for steps in (1, 3, 10):
        plain = euler_integrate(velocity, noise, steps)
        with torch.no_grad():
            zeros = guided_euler_integrate(velocity, noise, steps, previous, RtcGuidance(0, 5, schedule="zeros"))
            empty = guided_euler_integrate(velocity, noise, steps, previous[:, :0], RtcGuidance(2, 5))
        torch.testing.assert_close(zeros, plain)
        torch.testing.assert_close(empty, plain)
        # and with something weighted, guidance does change the result
        with torch.no_grad():
            guided = guided_euler_integrate(velocity, noise, steps, previous, RtcGuidance(2, 5))
        assert not torch.allclose(guided, plain, atol=1e-3)


# --- a bimodal flow ---------------------------------------------------------------------------

def _bimodal_velocity(mode: torch.Tensor, sigma: float = 0.3):
    """The exact flow velocity for data a ~ N(+mode, sigma^2) or N(-mode, sigma^2) (equal odds),
    x_t = t eps + (1 - t) a: v = (x - E[a | x_t]) / t."""
    def velocity(x, t, s):
        t = _times(t, x)
        var = (1 - t) ** 2 * sigma**2 + t**2  # of x_t about (1 - t) (+-mode)
        p_b = torch.sigmoid(2 * (1 - t) * (x * mode).sum(dim=(1, 2), keepdim=True) / var)
        gain = (1 - t) * sigma**2 / var
        mean_b, mean_a = mode + gain * (x - (1 - t) * mode), -mode + gain * (x + (1 - t) * mode)
        return (x - p_b * mean_b - (1 - p_b) * mean_a) / t
    return velocity


def test_guidance_toward_the_previous_chunk_picks_its_mode_and_continues_it():
    horizon, dim, delay = 8, 2, 3
    mode = 1.0 + 0.3 * torch.sin(torch.arange(horizon * dim, dtype=torch.float32)).reshape(horizon, dim)
    previous = mode[: horizon - delay].expand(256, -1, -1) + 0.2  # mode B, a little off its mean
    noise = torch.randn(256, horizon, dim, generator=torch.Generator().manual_seed(3))
    velocity = _bimodal_velocity(mode)
    g = RtcGuidance(delay=delay, execution_horizon=horizon - delay, schedule="exp")
    with torch.no_grad():
        plain = euler_integrate(velocity, noise, 10)
        guided = guided_euler_integrate(velocity, noise, 10, previous, g)
    assert torch.isfinite(guided).all()

    def picks_b(chunk):
        return ((chunk - mode).norm(dim=(1, 2)) < (chunk + mode).norm(dim=(1, 2))).float().mean().item()

    assert 0.3 < picks_b(plain) < 0.7  # unguided: either mode
    assert picks_b(guided) > 0.95
    gap_plain = (plain[:, :delay] - previous[:, :delay]).norm(dim=(1, 2)).mean()
    gap_guided = (guided[:, :delay] - previous[:, :delay]).norm(dim=(1, 2)).mean()
    assert gap_guided < 0.1 * gap_plain
    # it continues the previous actions themselves, not just their mode's mean
    assert gap_guided < 0.5 * (mode[:delay] - previous[0, :delay]).norm()


# --- a real tiny policy -----------------------------------------------------------------------

def test_a_tiny_policy_under_no_grad_is_guided_and_keeps_no_grads():
    data = make_dataset(16, seed=4)[0]
    policy = tiny_synthetic_policy(data).eval()
    assert any(p.requires_grad for p in policy.parameters())
    batch = 4
    noise = torch.randn(batch, policy.chunk_size, policy.noise_dim, generator=torch.Generator().manual_seed(5))
    delay = 2
    with torch.no_grad():
        cache = policy.embed_prefix(policy.prepare(data.batch(torch.arange(batch))))

        def velocity(x, t, s):
            return policy.velocity(x, t, s, cache)

        plain = euler_integrate(velocity, noise, 10)
        # a previous chunk the policy would not produce from this noise: its own output shifted
        previous = plain[:, delay:].flip(0) + 0.5
        g = RtcGuidance(delay=delay, execution_horizon=policy.chunk_size - delay - 1, schedule="exp")
        guided = guided_euler_integrate(velocity, noise, 10, previous, g)
    assert guided.shape == noise.shape and torch.isfinite(guided).all()
    assert not guided.requires_grad
    assert all(p.grad is None for p in policy.parameters())
    gap_plain = (plain[:, :delay] - previous[:, :delay]).norm()
    gap_guided = (guided[:, :delay] - previous[:, :delay]).norm()
    assert gap_guided < 0.5 * gap_plain


# --- bad configuration ------------------------------------------------------------------------

@pytest.mark.parametrize(("field", "kwargs"), [
    ("delay", {"delay": -1}),
    ("delay", {"delay": 1.5}),
    ("execution_horizon", {"execution_horizon": 0}),
    ("max_guidance_weight", {"max_guidance_weight": 0.0}),
    ("max_guidance_weight", {"max_guidance_weight": math.inf}),
    ("schedule", {"schedule": "cosine"}),
])
def test_bad_config_names_the_field(field, kwargs):
    with pytest.raises(ConfigError, match=field):
        RtcGuidance(**{"delay": 2, "execution_horizon": 5, **kwargs})


def test_bad_steps_and_shapes_raise():
    noise, g = torch.zeros(2, 6, 3), RtcGuidance(2, 4)
    velocity = _linear_velocity(torch.eye(3))
    with pytest.raises(ConfigError, match="steps"):
        guided_euler_integrate(velocity, noise, 0, torch.zeros(2, 4, 3), g)
    for bad in (torch.zeros(2, 7, 3), torch.zeros(2, 4, 2), torch.zeros(1, 4, 3), torch.zeros(4, 3)):
        with pytest.raises(ConfigError, match="previous"):
            guided_euler_integrate(velocity, noise, 3, bad, g)
