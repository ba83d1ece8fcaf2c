import math

import pytest
import torch

from policies.diffusion import EDM, SAMPLERS, DiffusionConfig, initial_noise


def edm(**overrides) -> EDM:
    return EDM(DiffusionConfig(**overrides))


class TanhNet(torch.nn.Module):
    """A bounded stand-in for F that uses every input (elementwise, so steps stay independent)."""

    def forward(self, x_in, c_noise, cond, step=None):
        return torch.tanh(x_in * 0.7 + c_noise.view(-1, 1, 1) + cond)


def test_preconditioning_values_at_sigma_data():
    e = edm(sigma_data=0.5)
    c_skip, c_out, c_in, c_noise = e.precondition(torch.tensor([0.5]))
    assert c_skip.item() == pytest.approx(0.5)
    assert c_out.item() == pytest.approx(0.5 / math.sqrt(2))
    assert c_in.item() == pytest.approx(1 / (0.5 * math.sqrt(2)))
    assert c_noise.item() == pytest.approx(math.log(0.5) / 4)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_denoiser_tends_to_identity_as_sigma_vanishes(as_tensor):
    e, net = edm(), TanhNet()
    x = torch.randn(4, 6, 3)
    errors = []
    for sigma in (1e-1, 1e-3, 1e-6):
        s = torch.full((4,), sigma) if as_tensor else sigma
        errors.append((e.denoise(net, x, s, cond=0.0) - x).abs().max().item())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-5


def test_f_space_mse_equals_edm_weighted_denoiser_loss():
    """loss(F) = λ(σ) ||D - x0||² with λ = (σ² + σd²) / (σ σd)², per sample."""
    e, net = edm(sigma_data=0.5), TanhNet()
    x0, noise = torch.randn(5, 4, 2), torch.randn(5, 4, 2)
    sigma = torch.tensor([0.01, 0.3, 1.0, 7.0, 60.0])
    per_sample = []
    for i in range(5):
        per_sample.append(e.loss(net, x0[i : i + 1], 0.0, sigma=sigma[i : i + 1], noise=noise[i : i + 1]))
    d = e.denoise(net, x0 + noise * sigma.view(-1, 1, 1), sigma, cond=0.0)
    weight = (sigma**2 + 0.25) / (sigma * 0.5) ** 2
    expected = weight * (d - x0).pow(2).mean(dim=(1, 2))
    torch.testing.assert_close(torch.stack(per_sample), expected, rtol=1e-4, atol=1e-6)


def test_loss_ignores_padded_steps():
    e, net = edm(), TanhNet()
    x0, noise, sigma = torch.randn(3, 8, 2), torch.randn(3, 8, 2), torch.full((3,), 0.7)
    pad = torch.zeros(3, 8, dtype=torch.bool)
    pad[:, 5:] = True
    base = e.loss(net, x0, 0.0, pad, sigma=sigma, noise=noise)
    changed = x0.clone()
    changed[:, 5:] += 100.0
    moved = e.loss(net, changed, 0.0, pad, sigma=sigma, noise=noise)
    assert moved.item() == pytest.approx(base.item(), rel=1e-6)
    only_valid = e.loss(net, x0[:, :5], 0.0, sigma=sigma, noise=noise[:, :5])
    assert base.item() == pytest.approx(only_valid.item(), rel=1e-6)


def test_training_sigma_is_truncated_log_logistic():
    e = edm()
    sigma = e.sample_training_sigma(40_000, generator=torch.Generator().manual_seed(0))
    assert sigma.min() >= 1e-3 and sigma.max() <= 80
    assert sigma.median().item() == pytest.approx(0.5, rel=0.05)  # the logistic's median is its loc
    # the log-logistic's quartiles sit at loc ± scale·ln 3
    q = torch.quantile(sigma.log(), torch.tensor([0.25, 0.75]))
    half_iqr = 0.5 * math.log(3)
    expected = torch.tensor([math.log(0.5) - half_iqr, math.log(0.5) + half_iqr])
    torch.testing.assert_close(q, expected, atol=0.03, rtol=0)
    narrow = edm(train_sigma_min=0.2, train_sigma_max=0.3).sample_training_sigma(1000)
    assert narrow.min() >= 0.2 and narrow.max() <= 0.3


def test_exponential_schedule():
    sigmas = edm(sigma_min=0.01, sigma_max=80.0, num_sampling_steps=6).sigmas()
    assert len(sigmas) == 7 and sigmas[-1] == 0.0
    assert sigmas[0] == pytest.approx(80.0) and sigmas[-2] == pytest.approx(0.01)
    ratios = [sigmas[i + 1] / sigmas[i] for i in range(5)]
    assert max(ratios) - min(ratios) < 1e-9


class GaussianDenoiser(torch.nn.Module):
    """F whose D is the exact denoiser of data ~ N(mu, s²): D(x; σ) = mu + s²/(s²+σ²) (x - mu)."""

    def __init__(self, edm_: EDM, mu: float, s: float) -> None:
        super().__init__()
        self.edm, self.mu, self.s = edm_, mu, s
        self.steps: list[int | None] = []

    def forward(self, x_in, c_noise, cond, step=None):
        self.steps.append(step)
        sigma = (c_noise * 4).exp().view(-1, 1, 1)
        c_skip, c_out, c_in, _ = self.edm.precondition(sigma)
        x = x_in / c_in
        d = self.mu + self.s**2 / (self.s**2 + sigma**2) * (x - self.mu)
        return (d - c_skip * x) / c_out


def gaussian_flow_error(sampler: str, n_steps: int, n: int = 2000, seed: int = 0) -> float:
    """Mean |sample - exact ODE solution| for data ~ N(0.3, 0.2²), where the probability-flow ODE maps
    noise x_T to mu + (x_T - mu) s / sqrt(s² + σ_max²)."""
    mu, s = 0.3, 0.2
    e = edm(num_sampling_steps=n_steps)
    x = e.sample(GaussianDenoiser(e, mu, s), (n, 1, 1), None, generator=torch.Generator().manual_seed(seed),
                 sampler=sampler)
    x_t = torch.randn((n, 1, 1), generator=torch.Generator().manual_seed(seed)) * 80.0
    return (x - (mu + (x_t - mu) * s / math.sqrt(s**2 + 80.0**2))).abs().mean().item()


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_samplers_converge_to_the_probability_flow(sampler):
    errors = [gaussian_flow_error(sampler, n) for n in (10, 40, 100)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.006  # first order: ~0.0045 at 100 steps; DPM++ 2M: ~1e-4


def test_the_integer_step_index_reaches_the_network():
    e = edm(num_sampling_steps=7)
    net = GaussianDenoiser(e, 0.0, 1.0)
    e.sample(net, (2, 1, 1), None)
    assert net.steps == list(range(7))


def test_second_order_sampler_beats_first_order_with_few_steps():
    assert gaussian_flow_error("dpmpp_2m", 8) < 0.5 * gaussian_flow_error("ddim", 8)


def test_ddim_and_euler_agree_on_edm_ode():
    e = edm(num_sampling_steps=5)
    net = TanhNet()
    a = e.sample(net, (3, 4, 2), 0.1, generator=torch.Generator().manual_seed(0), sampler="ddim")
    b = e.sample(net, (3, 4, 2), 0.1, generator=torch.Generator().manual_seed(0), sampler="euler")
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sampling_is_deterministic_under_a_seed(sampler):
    e, net = edm(num_sampling_steps=4), TanhNet()
    def run(seed: int) -> torch.Tensor:
        return e.sample(net, (2, 5, 3), 0.0, generator=torch.Generator().manual_seed(seed), sampler=sampler)

    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))
    torch.manual_seed(3)
    first = e.sample(net, (2, 5, 3), 0.0, sampler=sampler)
    torch.manual_seed(3)
    assert torch.equal(first, e.sample(net, (2, 5, 3), 0.0, sampler=sampler))


def test_initial_noise_draws_row_i_from_generator_i():
    rows = [torch.randn((1, 5, 3), generator=torch.Generator().manual_seed(s)) for s in (4, 2)]
    both = initial_noise((2, 5, 3), "cpu", torch.float32, [torch.Generator().manual_seed(s) for s in (4, 2)])
    assert torch.equal(both, torch.cat(rows))
    one = initial_noise((2, 5, 3), "cpu", torch.float32, torch.Generator().manual_seed(4))
    assert torch.equal(one, torch.randn((2, 5, 3), generator=torch.Generator().manual_seed(4)))


def test_sampling_context_wraps_the_loop():
    events = []

    class Net(TanhNet):
        def sampling(self, sigmas):
            from contextlib import contextmanager

            @contextmanager
            def ctx():
                events.append(("enter", len(sigmas)))
                yield
                events.append(("exit",))

            return ctx()

    edm(num_sampling_steps=3).sample(Net(), (1, 2, 1), 0.0)
    assert events == [("enter", 4), ("exit",)]


def test_config_errors():
    with pytest.raises(ValueError, match="valid keys: n_obs_steps"):
        DiffusionConfig.from_dict({"horizn": 10})
    with pytest.raises(ValueError, match="horizon"):
        DiffusionConfig(n_obs_steps=2, horizon=8, n_action_steps=8)
    with pytest.raises(ValueError, match="sampler"):
        DiffusionConfig(sampler="heun")
    with pytest.raises(ValueError, match="not 'mode'"):
        DiffusionConfig.from_dict({"name": "dit"}, policy="mode")
    assert DiffusionConfig.from_dict({"name": "mode", "horizon": 12}, policy="mode").horizon == 12
