"""ResNet-18 image encoder with GroupNorm, optional goal FiLM, avg or spatial-softmax pooling, random shift.

Written here because torchvision does not import beside the CPU torch build. Differences from the
torchvision ResNet-18, all on purpose (as in diffusion_policy / robomimic):
  - GroupNorm instead of BatchNorm: batch statistics misbehave with EMA weights and small or
    correlated batches of robot frames, so no BatchNorm anywhere.
  - Width is configurable (`base_channels`, 64 = the original); CPU presets use 32.
  - Pooling: global average, or spatial-softmax keypoints (expected x, y per channel) as in robomimic.
  - FiLM from a goal embedding modulates every residual block (RT-1 style) when `film_dim > 0`.
  - DrQ-style random shift (replicate pad + random crop back to the input size) in training mode only.

Input images are float [N, C, H, W] already normalized to [-1, 1]; output is [N, out_dim].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

POOLS = ("avg", "spatial_softmax")


@dataclass
class ResNetConfig:
    """policy.image_encoder.*: the one place these defaults are written (Hydra's conf/policy starts here)."""

    base_channels: int = 32  # 64 = the original ResNet-18 width (GPU preset)
    out_dim: int = 64  # feature width per camera frame, projected to the policy's width
    pool: str = "spatial_softmax"  # spatial_softmax (keypoints) | avg
    num_keypoints: int = 32  # spatial_softmax
    softmax_temperature: float = 1.0
    learnable_temperature: bool = False
    random_shift: int = 4  # DrQ pad-and-crop pixels while training; 0 = off
    stage_blocks: tuple[int, ...] = (2, 2, 2, 2)
    group_channels: int = 16  # channels per GroupNorm group

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["stage_blocks"] = list(d["stage_blocks"])
        return d


def group_norm(channels: int, group_channels: int) -> nn.GroupNorm:
    """GroupNorm with about `group_channels` channels per group (diffusion_policy uses 16)."""
    groups = max(1, channels // group_channels)
    while channels % groups:  # widths that are not multiples of group_channels still get a valid split
        groups -= 1
    return nn.GroupNorm(groups, channels)


def random_shift(images: torch.Tensor, pad: int) -> torch.Tensor:
    """Shift every image independently by up to `pad` pixels: replicate-pad, then crop back to H x W."""
    n, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    dy = torch.randint(0, 2 * pad + 1, (n,), device=images.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=images.device)
    rows = (torch.arange(h, device=images.device)[None, :] + dy[:, None])[:, :, None]  # [N, H, 1]
    cols = (torch.arange(w, device=images.device)[None, :] + dx[:, None])[:, None, :]  # [N, 1, W]
    batch = torch.arange(n, device=images.device)[:, None, None]
    # Advanced indexing on dims 0, 2, 3 puts the channel dim last: [N, H, W, C].
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


class FiLM(nn.Module):
    """Feature-wise affine modulation x * (1 + gamma(g)) + beta(g), per channel."""

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(cond).chunk(2, dim=-1)
        return x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]


class BasicBlock(nn.Module):
    """Two 3x3 convs with GroupNorm; FiLM (if any) acts on the residual branch before the sum."""

    def __init__(self, c_in: int, c_out: int, stride: int, group_channels: int, film_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = group_norm(c_out, group_channels)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = group_norm(c_out, group_channels)
        self.film = FiLM(film_dim, c_out) if film_dim > 0 else None
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), group_norm(c_out, group_channels)
            )

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        if self.film is not None:
            h = self.film(h, cond)
        return F.relu(h + self.shortcut(x))


class SpatialSoftmax(nn.Module):
    """Keypoints: a 1x1 conv to K maps, softmax over pixels, expected (x, y) in [-1, 1] per map -> [N, 2K]."""

    def __init__(self, channels: int, num_keypoints: int, temperature: float, learnable_temperature: bool):
        super().__init__()
        self.keypoints = nn.Conv2d(channels, num_keypoints, 1)
        log_t = torch.tensor(float(temperature)).log()
        if learnable_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        maps = self.keypoints(feat)
        n, k, h, w = maps.shape
        attn = torch.softmax(maps.flatten(2) / self.log_temperature.exp(), dim=-1)  # [N, K, H*W]
        ys = torch.linspace(-1.0, 1.0, h, device=feat.device, dtype=attn.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=feat.device, dtype=attn.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        ex = (attn * grid_x.reshape(1, 1, -1)).sum(-1)
        ey = (attn * grid_y.reshape(1, 1, -1)).sum(-1)
        return torch.stack([ex, ey], dim=-1).reshape(n, 2 * k)


class ResNetImageEncoder(nn.Module):
    """ResNet-18 (GroupNorm) -> pooling -> Linear(out_dim)."""

    def __init__(
        self,
        in_channels: int = 3,
        base_channels: int = ResNetConfig.base_channels,
        out_dim: int = ResNetConfig.out_dim,
        pool: str = ResNetConfig.pool,
        film_dim: int = 0,
        random_shift: int = ResNetConfig.random_shift,
        stage_blocks: Sequence[int] = ResNetConfig.stage_blocks,
        group_channels: int = ResNetConfig.group_channels,
        num_keypoints: int = ResNetConfig.num_keypoints,
        softmax_temperature: float = ResNetConfig.softmax_temperature,
        learnable_temperature: bool = ResNetConfig.learnable_temperature,
    ) -> None:
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"unknown image pooling {pool!r}; choose one of {', '.join(POOLS)}")
        if random_shift < 0:
            raise ValueError(f"random_shift must be >= 0 pixels (0 = off), got {random_shift}")
        if base_channels < 1 or out_dim < 1:
            raise ValueError(f"base_channels and out_dim must be positive, got {base_channels}, {out_dim}")
        self.film_dim = int(film_dim)
        self.shift = int(random_shift)
        self.out_dim = int(out_dim)
        # ImageNet stem: 84x84 -> 21x21 before the stages, 3x3 after them (as robomimic's ResNet18Conv).
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, base_channels, 7, 2, 3, bias=False),
            group_norm(base_channels, group_channels),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
        )
        blocks: list[BasicBlock] = []
        c_in = base_channels
        for stage, n_blocks in enumerate(stage_blocks):
            c_out = base_channels * 2**stage
            for i in range(n_blocks):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(BasicBlock(c_in, c_out, stride, group_channels, self.film_dim))
                c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.feature_channels = c_in
        if pool == "avg":
            self.pool: nn.Module = nn.AdaptiveAvgPool2d(1)
            pooled = c_in
        else:
            self.pool = SpatialSoftmax(c_in, num_keypoints, softmax_temperature, learnable_temperature)
            pooled = 2 * num_keypoints
        self.proj = nn.Linear(pooled, out_dim)

    def forward(self, images: torch.Tensor, goal_emb: torch.Tensor | None = None) -> torch.Tensor:
        if images.ndim != 4:
            raise ValueError(f"expected images [N, C, H, W], got shape {tuple(images.shape)}")
        if self.film_dim > 0:
            if goal_emb is None or goal_emb.shape != (images.shape[0], self.film_dim):
                got = None if goal_emb is None else tuple(goal_emb.shape)
                want = [images.shape[0], self.film_dim]
                raise ValueError(f"FiLM encoder needs goal_emb {want}, got {got}")
        if self.training and self.shift > 0:
            images = random_shift(images, self.shift)
        h = self.stem(images)
        cond = goal_emb if self.film_dim > 0 else None
        for block in self.blocks:
            h = block(h, cond)
        return self.proj(self.pool(h).flatten(1))
