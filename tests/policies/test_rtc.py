"""Real-time-chunking guidance in the EDM sampler: a toy denoiser with a known answer, and MoDE."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policies.diffusion import EDM, DiffusionConfig
from policies.rtc import PrefixGuidance
from robot_client.transitions import prefix_of_weights, soft_prefix_weights
from tests.serving.fakes import tiny_policy


def test_soft_prefix_weights_shape_and_inverse() -> None:
    w = soft_prefix_weights(6, 2, 8)
    assert list(w[:2]) == [1.0, 1.0] and list(w[6:]) == [0.0, 0.0]
    assert np.all(np.diff(w[1:6]) < 0) and np.all(w[2:6] > 0) and np.all(w[2:6] < 1)
    assert prefix_of_weights(w) == (6, 2)
    assert prefix_of_weights(soft_prefix_weights(3, 3, 5)) == (3, 3)
    with pytest.raises(ValueError):
        soft_prefix_weights(3, 4, 5)


@pytest.mark.parametrize("sampler", ["ddim", "euler"])
def test_guidance_on_a_point_mass_denoiser_gives_the_exact_interpolation(sampler) -> None:
    """Data = a point mass at a0, so the ideal denoiser is D(x; σ) = a0 (in F-space: F = (a0 - c_skip x) / c_out)
    and the unguided sampler returns a0. Guided, each step's D' = a0 + W (Y - a0) is the same constant, and the
    last step (σ -> 0) returns D': the answer is a0 + W (Y - a0) exactly, whatever the schedule."""
    edm = EDM(DiffusionConfig(horizon=8, n_action_steps=4, num_sampling_steps=6))
    a0 = torch.linspace(-1, 1, 8 * 2).view(1, 8, 2)
    y = torch.full((1, 8, 2), 0.7)
    w = torch.from_numpy(soft_prefix_weights(5, 2, 8)).view(1, 8, 1)

    def net(x_in, c_noise, cond, step=None):  # F such that the EDM-preconditioned D equals a0
        sigma = (4 * c_noise).exp().view(-1, 1, 1)
        c_skip, c_out, c_in, _ = edm.precondition(sigma.flatten())
        x = x_in / c_in.view(-1, 1, 1)
        return (a0 - c_skip.view(-1, 1, 1) * x) / c_out.view(-1, 1, 1)

    g = torch.Generator().manual_seed(0)
    plain = edm.sample(net, (1, 8, 2), None, generator=g, sampler=sampler)
    guided = edm.sample(net, (1, 8, 2), None, generator=g, sampler=sampler, guidance=PrefixGuidance(y, w))
    torch.testing.assert_close(plain, a0, rtol=0, atol=1e-5)
    torch.testing.assert_close(guided, a0 + w * (y - a0), rtol=0, atol=1e-5)
    zero = edm.sample(net, (1, 8, 2), None, generator=g, sampler=sampler,
                      guidance=PrefixGuidance(y, torch.zeros_like(w)))
    torch.testing.assert_close(zero, a0, rtol=0, atol=1e-5)


@pytest.mark.parametrize("expert_cache", [True, False])
def test_mode_continues_the_committed_prefix(expert_cache) -> None:
    policy = tiny_policy(expert_cache=expert_cache)
    obs = {"state": torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(1))}
    goal = {"task": torch.tensor([0, 1, 0])}
    noise = torch.randn(3, 8, 2, generator=torch.Generator().manual_seed(2))
    prefix = torch.tensor([[0.5, -0.5]]).repeat(3, 3, 1)
    weights = torch.from_numpy(np.stack([soft_prefix_weights(3, d, 3) for d in (0, 1, 2)]))
    plain = policy.predict_action(obs, goal, noise=noise)
    guided = policy.predict_action(obs, goal, noise=noise, prefix=prefix, prefix_weights=weights)
    torch.testing.assert_close(guided[1, :1], prefix[1, :1], rtol=0, atol=1e-5)  # the delayed ones: exact
    torch.testing.assert_close(guided[2, :2], prefix[2, :2], rtol=0, atol=1e-5)
    assert (guided[:, :3] - prefix).abs().mean() < (plain[:, :3] - prefix).abs().mean()
    unguided = policy.predict_action(obs, goal, noise=noise, prefix=prefix, prefix_weights=torch.zeros(3, 3))
    torch.testing.assert_close(unguided, plain)  # a zero mask is no guidance


def test_cached_and_uncached_experts_agree_under_guidance() -> None:
    obs = {"state": torch.randn(2, 2, 4, generator=torch.Generator().manual_seed(1))}
    goal = {"task": torch.tensor([0, 1])}
    noise = torch.randn(2, 8, 2, generator=torch.Generator().manual_seed(2))
    kw = {"noise": noise, "prefix": torch.full((2, 4, 2), 0.3),
          "prefix_weights": torch.from_numpy(np.stack([soft_prefix_weights(4, 2, 4)] * 2))}
    cached = tiny_policy(expert_cache=True).predict_action(obs, goal, **kw)
    uncached = tiny_policy(expert_cache=False).predict_action(obs, goal, **kw)
    torch.testing.assert_close(cached, uncached, rtol=1e-4, atol=1e-5)
