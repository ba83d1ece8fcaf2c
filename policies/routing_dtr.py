"""Denoising Task Routing (Park et al. 2023, "Denoising Task Routing for Diffusion Models") for MoDE's MLPs.

Each noise level is a task. DTR gives it a fixed, contiguous window of the MLP's H hidden units; the
window slides with the noise level, so neighbouring levels share most units and far ones few. No
router, no extra parameters. The closed form (H units, sharing ratio β, exponent α, task position
τ ∈ [0, 1], 0 = least noise):

    n_active = int(β H)              units each noise level uses
    start(τ) = round(τ^α (H - n_active))
    mask_c(τ) = 1  for start(τ) <= c < start(τ) + n_active, else 0

α > 1 makes the window move slowly at low noise and fast at high noise, so high noise levels get more
units of their own (the paper's "task weights"). The paper's τ is t / (T - 1) over its discrete steps;
EDM's σ is continuous, so here τ = F(σ), the CDF of the training σ distribution (policies/diffusion.py:
ln σ ~ Logistic(loc, scale) truncated to [train_sigma_min, train_sigma_max]). Training σ then spreads
the windows uniformly over τ, as the paper's uniform timestep sampling does.

Every layer uses the same window (as the authors' DiT does). The MLP is one SwiGLU of H units with
the experts' layout, w13 [2H, d] (gate rows, then up rows) and w2 [d, H]; MoDE's router=dtr builds it
with H = num_experts * expert_hidden, so it has MoDE's expert parameters and no router.

Caching: σ alone fixes the window, so at inference the window of every sampling step is computed once
per sampling call from the σ schedule (`DTRSchedule.plan`, Python ints); each step then runs only the
n_active units by slicing the weights (views, no copy). Training and uncached sampling multiply the
hidden units by the per-sample mask instead; both paths compute the window with `window_start`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class DTRSchedule:
    """σ -> window of hidden units. Holds no parameters; shared by every layer."""

    def __init__(self, n_units: int, sharing_ratio: float = 0.8, alpha: float = 4.0,
                 sigma_loc: float = math.log(0.5), sigma_scale: float = 0.5, sigma_min: float = 1e-3,
                 sigma_max: float = 80.0) -> None:
        if not 0.0 < sharing_ratio <= 1.0:
            raise ValueError(f"dtr_sharing_ratio must be in (0, 1], got {sharing_ratio}")
        if alpha <= 0:
            raise ValueError(f"dtr_alpha must be positive, got {alpha}")
        self.n_units, self.alpha = int(n_units), float(alpha)
        self.n_active = int(self.n_units * sharing_ratio)
        if self.n_active < 1:
            raise ValueError(f"dtr_sharing_ratio {sharing_ratio} of {n_units} hidden units leaves none "
                             "active; raise it")
        self.n_shift = self.n_units - self.n_active  # the last window starts here
        self.loc, self.scale = float(sigma_loc), float(sigma_scale)
        self.cdf_lo, self.cdf_hi = self._logistic_cdf(sigma_min), self._logistic_cdf(sigma_max)

    def _logistic_cdf(self, sigma: float) -> float:
        return 1.0 / (1.0 + math.exp(-(math.log(sigma) - self.loc) / self.scale))

    def tau(self, c_noise: torch.Tensor) -> torch.Tensor:
        """c_noise = ln(σ)/4 [N] -> τ = F(σ) in [0, 1] (float64: the window must not depend on rounding)."""
        log_sigma = 4.0 * c_noise.double()
        cdf = torch.sigmoid((log_sigma - self.loc) / self.scale)
        return ((cdf - self.cdf_lo) / (self.cdf_hi - self.cdf_lo)).clamp(0.0, 1.0)

    def window_start(self, c_noise: torch.Tensor) -> torch.Tensor:
        """[N] int64: the first active unit of each noise level."""
        return torch.round(self.tau(c_noise).pow(self.alpha) * self.n_shift).long()

    def masks(self, c_noise: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """[N, n_units] 0/1: each sample's window (training and uncached sampling)."""
        start = self.window_start(c_noise)[:, None]
        unit = torch.arange(self.n_units, device=c_noise.device)[None, :]
        return ((unit >= start) & (unit < start + self.n_active)).to(dtype)

    def plan(self, c_noise: torch.Tensor) -> list[tuple[int, int]]:
        """[(start, stop)] per sampling step, from the steps' c_noise (the values the sampler passes)."""
        return [(s, s + self.n_active) for s in self.window_start(c_noise).tolist()]


class DTRMLP(nn.Module):
    """SwiGLU over `hidden` units of which a σ-chosen window is active; w13 [2H, d], w2 [d, H]."""

    def __init__(self, width: int, hidden: int, out_std: float = 0.02) -> None:
        super().__init__()
        self.hidden = int(hidden)
        self.w13 = nn.Parameter(torch.randn(2 * hidden, width) * 0.02)
        self.w2 = nn.Parameter(torch.randn(width, hidden) * out_std)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None,
                route: torch.Tensor | tuple[int, int] | None = None) -> torch.Tensor:
        """route: a mask [B, H] per sample, or a window (start, stop) shared by the batch (cached)."""
        if isinstance(route, tuple):  # cached sampling: only the window's units are computed
            start, stop = route
            h = self.hidden
            gate = F.linear(x, self.w13[start:stop])
            up = F.linear(x, self.w13[h + start : h + stop])
            return F.linear(F.silu(gate) * up, self.w2[:, start:stop])
        if route is None:
            raise ValueError("a DTR MLP needs its window: a mask [B, hidden] or a (start, stop) pair")
        gate, up = F.linear(x, self.w13).chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up * route[:, None, :].to(x.dtype), self.w2)
