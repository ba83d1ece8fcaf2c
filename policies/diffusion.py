"""EDM diffusion core (Karras et al. 2022) and the plumbing every diffusion policy shares.

  D(x; σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x, c_noise(σ))
  c_skip = σd² / (σ² + σd²)   c_out = σ σd / √(σ² + σd²)   c_in = 1 / √(σ² + σd²)   c_noise = ln(σ) / 4

Training draws σ from a truncated log-logistic and regresses F onto its target (x0 - c_skip x) / c_out;
that plain MSE in F-space is exactly EDM's loss weighting λ(σ) = 1 / c_out² in D-space.
Sampling walks an exponential σ schedule σ_max -> σ_min, then 0, with one denoiser call per step.

The inner network is any module `net(x_in [B, T, Da], c_noise [B], cond, step: int | None) -> F`.
The sampler passes the integer step index so a network can look up per-step precomputed work (MoDE's
expert cache); a network with a `sampling(sigmas)` context manager gets it entered around the loop,
and one with an `integrate(edm, x, cond, sigmas, sampler)` method runs the loop itself (MoDE's compiled
and CUDA-graph sampling), normally by calling back `EDM.integrate`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from data.normalize import Normalizer
from policies.base import Policy

SAMPLERS = ("ddim", "euler", "dpmpp_2m")

# one generator for the whole batch, one per batch row, or None (the global RNG)
Generators = torch.Generator | Sequence[torch.Generator] | None


def initial_noise(shape: tuple[int, ...], device: torch.device | str, dtype: torch.dtype,
                  generator: Generators) -> torch.Tensor:
    """Standard normal noise of `shape`; with a sequence of generators, row i is drawn from generator i."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(shape, device=device, dtype=dtype, generator=generator)
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}: give one per row")
    return torch.cat([torch.randn((1, *shape[1:]), device=device, dtype=dtype, generator=g) for g in generator])


@dataclass
class DiffusionConfig:
    """Knobs every diffusion policy shares: the action window and EDM. Subclass to add a model's own."""

    n_obs_steps: int = 2  # To: observation frames the policy sees
    horizon: int = 10  # T: actions denoised per chunk (window starts To-1 steps before now)
    n_action_steps: int = 8  # Ta: actions executed from the chunk, action[To-1 : To-1+Ta]
    sigma_data: float = 0.5
    sigma_min: float = 1e-3  # sampling schedule: exponential from sigma_max down to sigma_min, then 0
    sigma_max: float = 80.0
    num_sampling_steps: int = 10
    sampler: str = "ddim"  # ddim | euler | dpmpp_2m
    train_sigma_loc: float = math.log(0.5)  # training σ: log-logistic(loc, scale) truncated to [min, max]
    train_sigma_scale: float = 0.5
    train_sigma_min: float = 1e-3
    train_sigma_max: float = 80.0

    def __post_init__(self) -> None:
        if self.n_obs_steps < 1 or self.n_action_steps < 1:
            raise ValueError("n_obs_steps and n_action_steps must be >= 1")
        if self.n_obs_steps - 1 + self.n_action_steps > self.horizon:
            raise ValueError(
                f"horizon ({self.horizon}) must cover n_obs_steps - 1 + n_action_steps "
                f"({self.n_obs_steps} - 1 + {self.n_action_steps}); raise horizon or lower the others"
            )
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if not 0 < self.sigma_min < self.sigma_max or not 0 < self.train_sigma_min < self.train_sigma_max:
            raise ValueError("need 0 < sigma_min < sigma_max and 0 < train_sigma_min < train_sigma_max")
        if self.num_sampling_steps < 1 or self.sigma_data <= 0 or self.train_sigma_scale <= 0:
            raise ValueError("num_sampling_steps, sigma_data and train_sigma_scale must be positive")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, policy: str = "") -> DiffusionConfig:
        """Build from plain data (Hydra / checkpoint); a `name` entry is allowed; unknown keys are errors."""
        data = dict(data or {})
        name = data.pop("name", None)
        if policy and name not in (None, policy):
            raise ValueError(f"config is for policy {name!r}, not {policy!r}")
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ValueError(
                f"unknown {policy or cls.__name__} config key(s) {unknown}; valid keys: {', '.join(valid)}"
            )
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every field's default as plain data, before __post_init__ resolves automatic values (such as the
        DiT's mlp_hidden=0): the one source of the defaults Hydra's conf/policy/*.yaml start from."""
        out = {}
        for f in dataclasses.fields(cls):
            value = f.default_factory() if f.default is dataclasses.MISSING else f.default
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


class EDM:
    """Preconditioning, training loss and samplers. Holds no parameters."""

    def __init__(self, cfg: DiffusionConfig) -> None:
        self.cfg = cfg
        self.sigma_data = cfg.sigma_data

    # --- preconditioning -----------------------------------------------------------------
    def precondition(self, sigma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """σ [B] -> c_skip, c_out, c_in, c_noise, each [B]."""
        sd2 = self.sigma_data**2
        s2 = sigma**2
        c_skip = sd2 / (s2 + sd2)
        c_out = sigma * self.sigma_data / (s2 + sd2).sqrt()
        c_in = 1.0 / (s2 + sd2).sqrt()
        return c_skip, c_out, c_in, sigma.log() / 4

    def denoise(self, net: Callable, x: torch.Tensor, sigma: float | torch.Tensor, cond: Any,
                step: int | None = None) -> torch.Tensor:
        """D(x; σ). σ is a float shared by the batch (sampling: coefficients stay Python floats, no
        host sync) or a tensor [B] (training)."""
        if isinstance(sigma, torch.Tensor):
            shape = (-1,) + (1,) * (x.ndim - 1)
            c_skip, c_out, c_in, c_noise = (c.view(shape) for c in self.precondition(sigma))
            return c_skip * x + c_out * net(c_in * x, c_noise.flatten(), cond, step=step)
        sd2, s2 = self.sigma_data**2, sigma**2
        c_noise = torch.full((x.shape[0],), math.log(sigma) / 4, device=x.device, dtype=x.dtype)
        out = net(x * (1.0 / math.sqrt(s2 + sd2)), c_noise, cond, step=step)
        return x * (sd2 / (s2 + sd2)) + out * (sigma * self.sigma_data / math.sqrt(s2 + sd2))

    # --- training ------------------------------------------------------------------------
    def sample_training_sigma(self, n: int, device: torch.device | str = "cpu",
                              generator: torch.Generator | None = None) -> torch.Tensor:
        """Truncated log-logistic: ln σ ~ Logistic(loc, scale) restricted to [min, max] by inverse CDF."""
        c = self.cfg
        lo = 1.0 / (1.0 + math.exp(-(math.log(c.train_sigma_min) - c.train_sigma_loc) / c.train_sigma_scale))
        hi = 1.0 / (1.0 + math.exp(-(math.log(c.train_sigma_max) - c.train_sigma_loc) / c.train_sigma_scale))
        u = torch.rand(n, device=device, generator=generator, dtype=torch.float64) * (hi - lo) + lo
        log_sigma = c.train_sigma_loc + c.train_sigma_scale * (u.log() - (-u).log1p())
        return log_sigma.exp().clamp(c.train_sigma_min, c.train_sigma_max).float()

    def loss(self, net: Callable, x0: torch.Tensor, cond: Any, pad_mask: torch.Tensor | None = None,
             sigma: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """F-target MSE averaged over the valid (not padded) steps. x0 [B, T, Da]; pad_mask [B, T] bool."""
        if sigma is None:
            sigma = self.sample_training_sigma(x0.shape[0], x0.device)
        sigma = sigma.to(x0.dtype)
        if noise is None:
            noise = torch.randn_like(x0)
        c_skip, c_out, c_in, c_noise = (c.view(-1, 1, 1) for c in self.precondition(sigma))
        x_noisy = x0 + noise * sigma.view(-1, 1, 1)
        target = (x0 - c_skip * x_noisy) / c_out
        out = net(c_in * x_noisy, c_noise.flatten(), cond, step=None)
        per_step = (out - target).pow(2).mean(dim=-1)  # [B, T]
        if pad_mask is None:
            return per_step.mean()
        valid = (~pad_mask.bool()).to(per_step.dtype)
        return (per_step * valid).sum() / valid.sum().clamp(min=1.0)

    # --- sampling ------------------------------------------------------------------------
    def sigmas(self, num_steps: int | None = None) -> list[float]:
        """Exponential schedule σ_max -> σ_min in `num_steps` values, then a final 0 (Python floats)."""
        n = num_steps or self.cfg.num_sampling_steps
        hi, lo = math.log(self.cfg.sigma_max), math.log(self.cfg.sigma_min)
        if n == 1:
            return [self.cfg.sigma_max, 0.0]
        return [math.exp(hi + (lo - hi) * i / (n - 1)) for i in range(n)] + [0.0]

    @torch.no_grad()
    def sample(self, net: Callable, shape: tuple[int, ...], cond: Any, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32, generator: Generators = None,
               sampler: str | None = None, num_steps: int | None = None, noise: torch.Tensor | None = None,
               guidance: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Draw x0 of `shape` from noise. Deterministic given the generator (or the global seed); given
        one generator per batch row, row i depends on generator i alone (every sampler here is
        deterministic after the initial noise), whatever else shares the batch. `noise`: the standard
        normal start itself (what `initial_noise` would draw; a remote client sends its own). `guidance`:
        maps each step's denoised estimate to a guided one (policies/rtc.py); a guided chunk runs EDM's own
        loop (with the network's expert cache) rather than a network's compiled loop."""
        sampler = sampler or self.cfg.sampler
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        sigmas = self.sigmas(num_steps)
        start = initial_noise(shape, device, dtype, generator) if noise is None else noise.to(device, dtype)
        x = start * sigmas[0]
        context = net.sampling(sigmas) if hasattr(net, "sampling") else nullcontext()
        with context:
            if hasattr(net, "integrate") and guidance is None:  # a network may run the loop itself (compiled)
                return net.integrate(self, x, cond, sigmas, sampler)
            return self.integrate(net, x, cond, sigmas, sampler, guidance)

    def integrate(self, net: Callable, x: torch.Tensor, cond: Any, sigmas: list[float],
                  sampler: str, guidance: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """The sampling loop from x at sigmas[0] down the schedule: one denoiser call per step."""
        old_denoised = None
        for i in range(len(sigmas) - 1):
            s, s_next = sigmas[i], sigmas[i + 1]
            denoised = self.denoise(net, x, s, cond, step=i)
            if guidance is not None:
                denoised = guidance(denoised)
            if sampler == "euler":  # x + (dx/dσ) Δσ with dx/dσ = (x - D) / σ
                x = x + (x - denoised) * ((s_next - s) / s)
            elif sampler == "ddim" or old_denoised is None or s_next == 0.0:
                # first-order DDIM / DPM-Solver++(1): x' = (σ'/σ) x + (1 - σ'/σ) D. On EDM's ODE this
                # equals the Euler step in exact arithmetic; it is written in the exponential-
                # integrator form that DPM++ 2M extends.
                x = x * (s_next / s) + denoised * (1.0 - s_next / s)
            else:  # DPM++ 2M: second-order multistep correction with the previous denoised estimate
                h = math.log(s / s_next)
                r = math.log(sigmas[i - 1] / s) / h
                d = denoised * (1.0 + 1.0 / (2.0 * r)) - old_denoised * (1.0 / (2.0 * r))
                x = x * (s_next / s) + d * (-math.expm1(-h))
            old_denoised = denoised
        return x


# --- policy plumbing shared by the diffusion policies ----------------------------------------
# --- shared building blocks ----------------------------------------------------------------
class NoiseEmbedding(nn.Module):
    """c_noise [B] -> c [B, d]: sinusoidal features (frequencies 1..100 resolve ~4% steps in σ) -> MLP."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.logspace(0, 2, width // 2), persistent=False)
        n_feat = 2 * (width // 2)
        self.mlp = nn.Sequential(nn.Linear(n_feat, 2 * width), nn.SiLU(), nn.Linear(2 * width, width))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        arg = c_noise[:, None] * self.freqs
        return self.mlp(torch.cat([arg.sin(), arg.cos()], dim=-1))


def action_dim_of(shape_meta: dict[str, Any], normalizer: Normalizer) -> int:
    """Da from shape_meta, checked against the normalizer's action statistics."""
    da = int(shape_meta["action"]["shape"][0])
    if "action" not in normalizer.maps:
        raise ValueError("the normalizer has no 'action' entry; fit it on the dataset's action array")
    stats_shape = tuple(normalizer.maps["action"].offset.shape)
    if stats_shape != (da,):
        raise ValueError(
            f"action dimension {da} (shape_meta) disagrees with the normalizer's action statistics "
            f"{list(stats_shape)}; refit the normalizer on this dataset or fix shape_meta['action']"
        )
    return da


def goal_from_batch(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Batch -> goal dict {"task": [B], "lang"?: [B, D]} (the batch keeps task at top level)."""
    return {"task": batch["task"], **batch.get("goal", {})}


class DiffusionPolicy(Policy):
    """compute_loss / predict_action around EDM. Subclasses build `self.net` and implement `encode`."""

    config_cls: ClassVar[type[DiffusionConfig]] = DiffusionConfig
    net: nn.Module

    def __init__(self, config: dict[str, Any], shape_meta: dict[str, Any], normalizer: Normalizer) -> None:
        cfg = self.config_cls.from_dict(config, policy=self.name)
        super().__init__(cfg.to_dict(), shape_meta, normalizer)
        self.cfg = cfg
        self.action_dim = action_dim_of(shape_meta, normalizer)
        self.edm = EDM(cfg)

    def set_lang_table(self, table: torch.Tensor | Any) -> None:
        """Store the task instructions' embeddings [n_tasks, lang_dim] in the policy (and so in its
        checkpoints). Subclasses keep their GoalEncoder in `self.goal_encoder`."""
        self.goal_encoder.set_lang_table(table)

    def encode(self, obs: dict[str, torch.Tensor], goal: dict[str, torch.Tensor]) -> Any:
        """Observations (env units) + goal -> the conditioning the network takes."""
        raise NotImplementedError

    def aux_loss(self) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """Extra loss terms of the last training forward (MoDE: load balancing)."""
        return None, {}

    def compute_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cond = self.encode(batch["obs"], goal_from_batch(batch))
        x0 = self.normalizer.normalize("action", batch["action"])
        diffusion_loss = self.edm.loss(self.net, x0, cond, batch.get("action_is_pad"))
        aux, metrics = self.aux_loss()
        loss = diffusion_loss if aux is None else diffusion_loss + aux
        return loss, {"diffusion_loss": diffusion_loss.detach(), **metrics}

    @torch.no_grad()
    def predict_action(self, obs: dict[str, torch.Tensor], goal: dict[str, torch.Tensor],
                       generator: Generators = None, noise: torch.Tensor | None = None,
                       prefix: torch.Tensor | None = None, prefix_weights: torch.Tensor | None = None,
                       ) -> torch.Tensor:
        """`noise` [B, T, Da]: the sampler's standard normal start (else drawn from `generator`).
        Real-time chunking: `prefix` [B, P, Da] committed actions (env units) from the observation's time
        on, guided toward with `prefix_weights` [B, P] (policies/rtc.py); the returned chunk starts at the
        observation's time, as always."""
        cond = self.encode(obs, goal)
        batch = next(iter(obs.values())).shape[0]
        ref = next(self.net.parameters())
        start = self.cfg.n_obs_steps - 1
        guidance = None
        if prefix is not None:
            from policies.rtc import PrefixGuidance

            n = prefix.shape[1]
            target = torch.zeros((batch, self.cfg.horizon, self.action_dim), device=ref.device, dtype=ref.dtype)
            weights = torch.zeros((batch, self.cfg.horizon, 1), device=ref.device, dtype=ref.dtype)
            target[:, start : start + n] = self.normalizer.normalize("action", prefix.to(ref.device, ref.dtype))
            weights[:, start : start + n, 0] = prefix_weights.to(ref.device, ref.dtype)
            guidance = PrefixGuidance(target, weights)
        x0 = self.edm.sample(self.net, (batch, self.cfg.horizon, self.action_dim), cond,
                             device=ref.device, dtype=ref.dtype, generator=generator, noise=noise,
                             guidance=guidance)
        action = self.normalizer.unnormalize("action", x0)
        return action[:, start : start + self.cfg.n_action_steps]
