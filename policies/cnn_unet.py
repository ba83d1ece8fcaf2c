"""CNN baseline: the 1D temporal U-Net of Diffusion Policy (Chi et al., 2023), EDM-wrapped.

The action chunk [B, T, Da] is a Da-channel signal over T time steps. A U-Net of Conv1d residual
blocks (Conv1d -> GroupNorm -> Mish, twice) halves T at each level and doubles it back on the way up
with skip connections. Every residual block is FiLM-conditioned (per-channel scale and bias) on one
vector: [noise embedding of c_noise, flattened observation feature, goal embedding]. There is no
attention; observations enter only through FiLM. The network predicts EDM's F (policies/diffusion.py).

  level l (of L = len(down_dims)):  Res(c_{l-1} -> c_l), Res(c_l -> c_l), Downsample (not the last)
  middle:                           Res(c_L), Res(c_L)
  up, for l = L-1 .. 1:             concat skip -> Res(2 c_{l+1} -> c_l), Res(c_l), Upsample
  head:                             Conv1dBlock(c_1) -> Conv1d 1x1 -> Da channels (zero-initialized)

T need not be a multiple of 2^(L-1): the chunk is edge-padded to one inside the network and cropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from data.normalize import Normalizer
from policies.base import register_policy
from policies.diffusion import DiffusionConfig, DiffusionPolicy, NoiseEmbedding
from policies.encoders.goal import GoalEncoder
from policies.encoders.obs import ObsEncoder
from policies.encoders.resnet import ResNetConfig


@dataclass
class CNNConfig(DiffusionConfig):
    down_dims: list[int] = field(default_factory=lambda: [64, 128, 256])  # Chi et al.: [256, 512, 1024]
    kernel_size: int = 5
    n_groups: int = 8  # GroupNorm groups in every Conv1d block
    cond_predict_scale: bool = True  # FiLM predicts scale and bias (False: bias only)
    noise_emb_dim: int = 64  # width of the c_noise embedding that joins the FiLM conditioning
    obs_width: int = 64  # feature per observation token; the global feature is n_tokens * obs_width
    goal_width: int = 64  # goal embedding (task table or projected language)
    goal_dropout: float = 0.0  # training: zero the goal embedding of this fraction of samples
    state_hidden: int = 128  # hidden size of the per-group state MLPs
    state_grouping: str = "joint"  # joint: all state keys in one MLP per frame | per_key
    image_film: bool = True  # FiLM the image encoders with the goal embedding
    image_encoder: dict = field(default_factory=lambda: ResNetConfig().to_dict())  # encoders/resnet.ResNetConfig

    def __post_init__(self) -> None:
        super().__post_init__()
        self.down_dims = [int(d) for d in self.down_dims]
        if not self.down_dims or min(self.down_dims) < 1:
            raise ValueError(f"down_dims must be a non-empty list of positive widths, got {self.down_dims}")
        bad = [d for d in self.down_dims if d % self.n_groups]
        if self.n_groups < 1 or bad:
            raise ValueError(f"every down_dims entry must divide by n_groups={self.n_groups}; got {bad}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same-length convs), got {self.kernel_size}")
        if min(self.noise_emb_dim, self.obs_width, self.goal_width) < 2:
            raise ValueError("noise_emb_dim, obs_width and goal_width must be >= 2")
        if not 0.0 <= self.goal_dropout < 1.0:
            raise ValueError(f"goal_dropout must be in [0, 1), got {self.goal_dropout}")


# --- building blocks -------------------------------------------------------------------------
class Conv1dBlock(nn.Sequential):
    """Conv1d (same length) -> GroupNorm -> Mish."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, n_groups: int) -> None:
        super().__init__(
            nn.Conv1d(c_in, c_out, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, c_out),
            nn.Mish(),
        )


class CondResBlock1d(nn.Module):
    """Two Conv1d blocks; FiLM from the conditioning vector between them; 1x1 conv on the skip if needed."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int, kernel_size: int, n_groups: int,
                 predict_scale: bool) -> None:
        super().__init__()
        self.block1 = Conv1dBlock(c_in, c_out, kernel_size, n_groups)
        self.block2 = Conv1dBlock(c_out, c_out, kernel_size, n_groups)
        self.predict_scale = predict_scale
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, (2 if predict_scale else 1) * c_out))
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.block1(x)
        film = self.film(cond)[:, :, None]
        if self.predict_scale:
            scale, bias = film.chunk(2, dim=1)
            h = h * (1 + scale) + bias  # 1 + scale: a zero FiLM output leaves features unchanged
        else:
            h = h + film
        return self.block2(h) + self.skip(x)


class TemporalUnet(nn.Module):
    """net(x_in [B, T, Da], c_noise [B], cond [B, cond_dim], step) -> F [B, T, Da]."""

    def __init__(self, cfg: CNNConfig, action_dim: int, cond_dim: int) -> None:
        super().__init__()
        k, g, s = cfg.kernel_size, cfg.n_groups, cfg.cond_predict_scale
        film_dim = cfg.noise_emb_dim + cond_dim
        self.noise_emb = NoiseEmbedding(cfg.noise_emb_dim)
        dims = [action_dim, *cfg.down_dims]
        pairs = list(zip(dims[:-1], dims[1:]))
        self.multiple = 2 ** (len(cfg.down_dims) - 1)  # T must divide by this (padded inside if not)
        self.down = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(pairs):
            last = i == len(pairs) - 1
            self.down.append(nn.ModuleList([
                CondResBlock1d(c_in, c_out, film_dim, k, g, s),
                CondResBlock1d(c_out, c_out, film_dim, k, g, s),
                nn.Identity() if last else nn.Conv1d(c_out, c_out, 3, stride=2, padding=1),
            ]))
        mid = cfg.down_dims[-1]
        self.mid = nn.ModuleList([CondResBlock1d(mid, mid, film_dim, k, g, s) for _ in range(2)])
        self.up = nn.ModuleList()
        for c_in, c_out in reversed(pairs[1:]):
            self.up.append(nn.ModuleList([
                CondResBlock1d(2 * c_out, c_in, film_dim, k, g, s),
                CondResBlock1d(c_in, c_in, film_dim, k, g, s),
                nn.ConvTranspose1d(c_in, c_in, 4, stride=2, padding=1),
            ]))
        self.head = nn.Sequential(Conv1dBlock(cfg.down_dims[0], cfg.down_dims[0], k, g),
                                  nn.Conv1d(cfg.down_dims[0], action_dim, 1))
        nn.init.zeros_(self.head[-1].weight)  # F starts at 0, i.e. D(x; σ) = c_skip x (as the transformers)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor,
                step: int | None = None) -> torch.Tensor:
        film = torch.cat([self.noise_emb(c_noise), cond.to(x_in.dtype)], dim=-1)
        horizon = x_in.shape[1]
        x = x_in.transpose(1, 2)  # [B, Da, T]: time is the conv axis
        pad = -horizon % self.multiple
        if pad:
            x = F.pad(x, (0, pad), mode="replicate")
        skips = []
        for res1, res2, downsample in self.down:
            x = res2(res1(x, film), film)
            skips.append(x)
            x = downsample(x)
        for res in self.mid:
            x = res(x, film)
        for res1, res2, upsample in self.up:
            x = res1(torch.cat([x, skips.pop()], dim=1), film)
            x = upsample(res2(x, film))
        return self.head(x)[:, :, :horizon].transpose(1, 2)


# --- the policy ------------------------------------------------------------------------------
@register_policy("cnn")
class CNNPolicy(DiffusionPolicy):
    """Observation + goal features -> FiLM of a temporal U-Net denoiser -> EDM."""

    config_cls: ClassVar[type[DiffusionConfig]] = CNNConfig
    cfg: CNNConfig

    def __init__(self, config: dict[str, Any], shape_meta: dict[str, Any], normalizer: Normalizer) -> None:
        super().__init__(config, shape_meta, normalizer)
        cfg = self.cfg
        self.goal_encoder = GoalEncoder.from_shape_meta(shape_meta, cfg.goal_width, cfg.goal_dropout)
        self.obs_encoder = ObsEncoder(
            shape_meta, normalizer, cfg.obs_width, cfg.n_obs_steps, cfg.state_hidden, cfg.state_grouping,
            cfg.image_encoder, film_dim=cfg.goal_width if cfg.image_film else 0,
        )
        cond_dim = self.obs_encoder.n_tokens * cfg.obs_width + cfg.goal_width
        self.net = TemporalUnet(cfg, self.action_dim, cond_dim)

    def encode(self, obs: dict[str, torch.Tensor], goal: dict[str, torch.Tensor]) -> torch.Tensor:
        """-> the global conditioning [B, goal_width + n_obs_tokens * obs_width]."""
        goal_emb = self.goal_encoder(goal)  # goal dropout (training) happens inside the encoder
        obs_feat = self.obs_encoder.global_feature(obs, self.normalizer, goal_emb)
        return torch.cat([goal_emb.to(obs_feat.dtype), obs_feat], dim=-1)

    def param_counts(self) -> dict[str, int]:
        """Dense model: every parameter is active for every sample."""
        total = sum(p.numel() for p in self.parameters())
        return {"params_total": total, "params_active": total}
