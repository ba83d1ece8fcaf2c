import math

import numpy as np
import pytest
import torch

from data.normalize import Normalizer
from policies.base import Policy
from policies.diffusion import EDM, DiffusionConfig, goal_from_batch
from policies.routing_dtr import DTRMLP, DTRSchedule

DA, TO, T, TA = 3, 2, 6, 4
TINY = {"n_obs_steps": TO, "horizon": T, "n_action_steps": TA, "width": 32, "n_layers": 2, "n_heads": 2,
        "state_hidden": 16, "num_sampling_steps": 6, "num_experts": 4, "expert_hidden": 10,
        "router_hidden": 8}
LOC, SCALE, LO, HI = math.log(0.5), 0.5, 1e-3, 80.0  # the training σ distribution of DiffusionConfig


def make_policy(seed: int = 0, **overrides) -> Policy:
    rng = np.random.default_rng(0)
    arrays = {"action": rng.uniform(-1, 2, size=(50, DA)).astype(np.float32),
              "pos": rng.normal(size=(50, 4)).astype(np.float32)}
    shape_meta = {"obs": {"pos": {"shape": [4], "type": "low_dim"}}, "action": {"shape": [DA]}, "n_tasks": 2,
                  "lang_dim": 0}
    torch.manual_seed(seed)
    normalizer = Normalizer.fit(arrays, {"action": "limits", "pos": "limits"})
    policy = Policy.build("mode", {**TINY, "router": "dtr", **overrides}, shape_meta, normalizer)
    torch.nn.init.normal_(policy.net.head.weight, std=0.5)  # the head starts at 0: every window would match
    return policy


def batch_for(b: int = 3, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"obs": {"pos": torch.randn(b, TO, 4, generator=g)}, "action": torch.rand(b, T, DA, generator=g),
            "action_is_pad": torch.zeros(b, T, dtype=torch.bool), "task": torch.arange(b) % 2}


def expected_start(sigma: float, n_units: int, beta: float = 0.8, alpha: float = 4.0) -> int:
    """The closed form, written out with Python floats: round(F(σ)^α (H - int(βH)))."""
    def cdf(s: float) -> float:
        return 1.0 / (1.0 + math.exp(-(math.log(s) - LOC) / SCALE))

    tau = (cdf(sigma) - cdf(LO)) / (cdf(HI) - cdf(LO))
    return round(tau**alpha * (n_units - int(beta * n_units)))


def c_noise(sigmas: list[float]) -> torch.Tensor:
    return torch.tensor([math.log(s) / 4 for s in sigmas])


# --- the closed form --------------------------------------------------------------------------
def test_masks_match_the_closed_form():
    schedule = DTRSchedule(100, 0.8, 4.0, LOC, SCALE, LO, HI)
    assert (schedule.n_active, schedule.n_shift) == (80, 20)
    sigmas = [LO, 0.01, 0.1, 0.5, 1.0, 2.0, 5.0, HI]
    masks = schedule.masks(c_noise(sigmas))
    assert masks.shape == (8, 100)
    for sigma, mask in zip(sigmas, masks):
        start = expected_start(sigma, 100)
        want = torch.zeros(100)
        want[start : start + 80] = 1
        assert torch.equal(mask, want), f"σ={sigma}: window should start at {start}"
    # the ends: least noise -> the first units, most noise -> the last ones
    assert schedule.plan(c_noise([LO, HI])) == [(0, 80), (20, 100)]
    # σ = e^loc is the median of the training distribution: τ ≈ 0.5, window start round(0.5^4 * 20) = 1
    assert schedule.plan(c_noise([0.5])) == [(1, 81)]


def test_windows_slide_with_sigma_and_high_noise_gets_more_own_units():
    schedule = DTRSchedule(400, 0.8, 4.0)
    sigmas = np.exp(np.linspace(math.log(LO), math.log(HI), 200)).tolist()
    starts = schedule.window_start(c_noise(sigmas))
    assert (starts.diff() >= 0).all() and starts[0] == 0 and starts[-1] == 80
    tau = schedule.tau(c_noise(sigmas))
    low, high = starts[tau < 0.5], starts[tau >= 0.5]  # α = 4: the window moves ~15x more in the upper half
    assert (high.max() - high.min()) > 10 * (low.max() - low.min())


def test_training_sigmas_spread_uniformly_over_tau():
    edm = EDM(DiffusionConfig())
    sigma = edm.sample_training_sigma(20000, generator=torch.Generator().manual_seed(0))
    tau = DTRSchedule(100).tau(sigma.double().log() / 4)
    quantiles = torch.quantile(tau, torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64))
    torch.testing.assert_close(quantiles, torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64),
                               atol=0.02, rtol=0)


def test_sliced_window_equals_masked_units():
    torch.manual_seed(0)
    mlp = DTRMLP(8, 20)
    x = torch.randn(2, 5, 8)
    mask = torch.zeros(2, 20)
    mask[:, 3:19] = 1
    torch.testing.assert_close(mlp(x, None, (3, 19)), mlp(x, None, mask))
    with pytest.raises(ValueError, match="window"):
        mlp(x, None, None)


# --- inside MoDE ------------------------------------------------------------------------------
def test_dtr_policy_has_no_router_and_the_expert_parameters():
    dtr, learned = make_policy(), make_policy(router="learned")
    router = sum(p.numel() for m in learned.net.sparse_layers() for p in m.router.parameters())
    counts = dtr.param_counts()
    assert counts["params_total"] == learned.param_counts()["params_total"] - router
    idle = TINY["n_layers"] * 3 * TINY["width"] * (40 - 32)  # 40 units, int(0.8 * 40) = 32 active
    assert counts["params_active"] == counts["params_total"] - idle
    assert not dtr.net.sparse_layers() and all(isinstance(b.mlp, DTRMLP) for b in dtr.net.blocks)


def test_training_loss_shapes_and_gradients_stay_in_the_window():
    policy = make_policy().train()
    loss, metrics = policy.compute_loss(batch_for())
    assert loss.ndim == 0 and "lb_loss" not in metrics
    loss.backward()
    assert all(p.grad is not None for p in policy.parameters())
    policy.zero_grad()
    batch = batch_for(b=4)
    sigma = 0.05
    cond = policy.encode(batch["obs"], goal_from_batch(batch))
    x0 = policy.normalizer.normalize("action", batch["action"])
    policy.edm.loss(policy.net, x0, cond, sigma=torch.full((4,), sigma)).backward()
    start = expected_start(sigma, 40)
    for block in policy.net.blocks:
        unit_grad = block.mlp.w2.grad.abs().sum(0)  # [40]: one column per hidden unit
        assert (unit_grad[start : start + 32] > 0).all()
        assert (unit_grad[:start] == 0).all() and (unit_grad[start + 32 :] == 0).all()


def test_cached_and_uncached_sampling_use_identical_windows():
    policy = make_policy().eval()
    seen: dict[bool, list] = {True: [], False: []}
    cached = [True]
    hooks = [b.mlp.register_forward_pre_hook(lambda m, args: seen[cached[0]].append(args[2]))
             for b in policy.net.blocks]
    batch = batch_for()
    outs = {}
    for flag in (True, False):
        cached[0] = policy.net.expert_cache = flag
        outs[flag] = policy.predict_action(batch["obs"], goal_from_batch(batch),
                                           generator=torch.Generator().manual_seed(0))
    for h in hooks:
        h.remove()
    steps = TINY["num_sampling_steps"] * TINY["n_layers"]
    assert len(seen[True]) == len(seen[False]) == steps
    assert all(isinstance(r, tuple) for r in seen[True])  # the cached path slices, never masks
    for (start, stop), mask in zip(seen[True], seen[False]):
        want = torch.zeros(40)
        want[start:stop] = 1
        assert (mask == want).all()  # every sample of the batch: the same window
    sigmas = [s for s in policy.edm.sigmas() if s > 0]
    want = [(expected_start(s, 40), expected_start(s, 40) + 32) for s in sigmas]
    assert seen[True][:: TINY["n_layers"]] == want
    torch.testing.assert_close(outs[True], outs[False], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bad,match", [
    ({"router": "hash"}, "router"), ({"dtr_sharing_ratio": 0.0}, "sharing_ratio"),
    ({"dtr_sharing_ratio": 1.5}, "sharing_ratio"), ({"dtr_alpha": 0.0}, "alpha"),
    ({"shared_expert": True}, "shared_expert"), ({"dtr_sharing_ratio": 0.01}, "none active"),
])
def test_bad_dtr_config_fails_at_construction(bad, match):
    with pytest.raises(ValueError, match=match):
        make_policy(**bad)
