"""Observation tokenizer: obs {key: [B, To, ...]} in env units -> tokens [B, n_tokens, width].

  state (low_dim) keys  grouped ("joint": all keys concatenated into one group; "per_key": one group
                        per key); each group has an MLP that turns each of the To frames into a token
  camera (rgb) keys     uint8 [B, To, H, W, 3] -> [-1, 1] -> ResNet encoder (one per camera; optional
                        FiLM from the goal embedding) -> Linear -> one token per frame; or, with
                        `codebook` (policies/encoders/codebook.py), a codebook / linear bottleneck fed
                        the feature and the goal embedding -> one token per frame

Token order: state groups, then cameras, each in sorted key order and frame order; n_tokens =
To * (n_groups + n_cameras). `global_feature` flattens the tokens for models without attention (CNN).
Normalization uses the policy's normalizer, passed in at call time so its buffers stay owned by the
policy (one copy in the state_dict).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from data.normalize import Normalizer
from policies.encoders.codebook import CodebookConfig, make_bottleneck

STATE_GROUPINGS = ("joint", "per_key")


def state_mlp(d_in: int, hidden: int, width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.SiLU(), nn.Linear(hidden, width))


class ObsEncoder(nn.Module):
    def __init__(self, shape_meta: dict[str, Any], normalizer: Normalizer, width: int, n_obs_steps: int,
                 state_hidden: int = 128, state_grouping: str = "joint",
                 image_encoder: dict[str, Any] | None = None, film_dim: int = 0,
                 codebook: dict[str, Any] | None = None, goal_dim: int = 0) -> None:
        super().__init__()
        obs_meta = shape_meta["obs"]
        bad = {k: m.get("type") for k, m in obs_meta.items() if m.get("type") not in ("low_dim", "rgb")}
        if bad:
            raise ValueError(f"observation types must be 'low_dim' or 'rgb'; got {bad}")
        if state_grouping not in STATE_GROUPINGS:
            raise ValueError(f"unknown state_grouping {state_grouping!r}; choose one of {STATE_GROUPINGS}")
        self.n_obs_steps, self.width = n_obs_steps, width
        self.shapes = {k: tuple(int(s) for s in m["shape"]) for k, m in obs_meta.items()}
        state_keys = sorted(k for k, m in obs_meta.items() if m["type"] == "low_dim")
        self.camera_keys = sorted(k for k, m in obs_meta.items() if m["type"] == "rgb")
        missing = [k for k in state_keys if k not in normalizer.maps]
        if missing:
            raise ValueError(f"the normalizer has no statistics for state key(s) {missing}; fit it on them")
        if state_grouping == "joint":
            self.groups = {"state": state_keys} if state_keys else {}
        else:
            self.groups = {k: [k] for k in state_keys}
        self.state_mlps = nn.ModuleDict({
            group: state_mlp(sum(self.shapes[k][-1] for k in keys), state_hidden, width)
            for group, keys in self.groups.items()
        })
        self.film_dim, self.goal_dim = film_dim, goal_dim
        bottleneck = CodebookConfig.from_dict(codebook)
        if bottleneck.kind != "none" and not self.camera_keys:
            raise ValueError(f"codebook.kind={bottleneck.kind} filters image tokens, but the policy has no "
                             "camera (rgb) inputs; set policy.codebook.kind=none or add a camera to "
                             "task.obs_keys")
        self.image_encoders = nn.ModuleDict()
        self.image_proj = nn.ModuleDict()  # feature -> token per camera: a Linear (codebook.kind=none)
        self.image_filters = nn.ModuleDict()  # ... or a codebook / linear bottleneck
        for key in self.camera_keys:
            if len(self.shapes[key]) != 3 or self.shapes[key][-1] != 3:
                raise ValueError(
                    f"camera {key!r} must have shape [H, W, 3] (uint8, channels last), got {self.shapes[key]}"
                )
            encoder = make_image_encoder(image_encoder or {}, film_dim)
            self.image_encoders[key] = encoder
            if bottleneck.kind == "none":
                self.image_proj[key] = nn.Linear(encoder.out_dim, width)
            else:
                self.image_filters[key] = make_bottleneck(bottleneck, encoder.out_dim, goal_dim, width)
        self.n_tokens = n_obs_steps * (len(self.groups) + len(self.camera_keys))
        if self.n_tokens == 0:
            raise ValueError("shape_meta['obs'] has no observation keys")

    @property
    def keys(self) -> list[str]:
        return [k for keys in self.groups.values() for k in keys] + self.camera_keys

    def check(self, obs: dict[str, torch.Tensor]) -> int:
        """Clear errors for a batch the policy was not built for; returns B."""
        missing = [k for k in self.keys if k not in obs]
        if missing:
            raise KeyError(
                f"the batch lacks observation key(s) {missing} that the policy was built for; "
                f"it has {sorted(obs)}"
            )
        for k in self.keys:
            x = obs[k]
            if x.ndim != 2 + len(self.shapes[k]) or tuple(x.shape[2:]) != self.shapes[k]:
                raise ValueError(f"obs[{k!r}] should be [B, To, {', '.join(map(str, self.shapes[k]))}], "
                                 f"got {list(x.shape)}")
            if x.shape[1] < self.n_obs_steps:
                raise ValueError(
                    f"obs[{k!r}] has {x.shape[1]} frames, the policy needs n_obs_steps={self.n_obs_steps}"
                )
        return obs[self.keys[0]].shape[0]

    def forward(self, obs: dict[str, torch.Tensor], normalizer: Normalizer,
                goal_emb: torch.Tensor | None = None) -> torch.Tensor:
        batch = self.check(obs)
        to = self.n_obs_steps
        tokens = []
        for group, keys in self.groups.items():
            parts = [normalizer.normalize(k, obs[k][:, :to]) for k in keys]
            tokens.append(self.state_mlps[group](parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)))
        for key in self.camera_keys:
            frames = obs[key][:, :to]
            if key in normalizer.maps:
                images = normalizer.normalize(key, frames)
            else:  # images need no fitted statistics: uint8 [0, 255] -> [-1, 1]
                images = frames.float() / 127.5 - 1.0
            images = images.permute(0, 1, 4, 2, 3).reshape(batch * to, 3, *self.shapes[key][:2])
            goal_frames = None
            if goal_emb is not None and (self.film_dim > 0 or (self.image_filters and self.goal_dim > 0)):
                goal_frames = goal_emb.repeat_interleave(to, dim=0)  # [B*To, dim], frame-major like images
            feat = self.image_encoders[key](images, goal_frames if self.film_dim > 0 else None)
            if self.image_filters:
                token = self.image_filters[key](feat, goal_frames)
            else:
                token = self.image_proj[key](feat)
            tokens.append(token.view(batch, to, self.width))
        return tokens[0] if len(tokens) == 1 else torch.cat(tokens, dim=1)

    def filter_metrics(self) -> dict[str, torch.Tensor]:
        """Code usage of the image bottlenecks' last forward: {"codebook/<camera>/<metric>": tensor}."""
        return {f"codebook/{key}/{name}": value for key, f in self.image_filters.items()
                for name, value in f.usage_metrics().items()}

    def global_feature(self, obs: dict[str, torch.Tensor], normalizer: Normalizer,
                       goal_emb: torch.Tensor | None = None) -> torch.Tensor:
        """[B, n_tokens * width]: the tokens flattened (the CNN baseline's observation feature)."""
        return self.forward(obs, normalizer, goal_emb).flatten(1)


def make_image_encoder(kwargs: dict[str, Any], film_dim: int) -> nn.Module:
    from policies.encoders.resnet import ResNetImageEncoder  # lazy: state-only policies never need it

    try:
        return ResNetImageEncoder(**kwargs, film_dim=film_dim)
    except TypeError as err:
        raise ValueError(f"bad image_encoder config {kwargs}: {err}") from err
