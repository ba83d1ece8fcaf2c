"""Per-key normalizer that lives inside the policy (its buffers are in the policy's state_dict).

Modes:
  limits    affine map of [min, max] to [-1, 1]; constant dimensions map to 0 (epsilon guard)
  gaussian  (x - mean) / std, std floored at epsilon
  identity  no change
  image     uint8 [0, 255] -> float [-1, 1] (fixed, nothing fitted)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

MODES = ("limits", "gaussian", "identity", "image")
EPS = 1e-4


class _Affine(nn.Module):
    """y = (x - offset) * scale, elementwise over the last dimension(s)."""

    def __init__(self, offset: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("offset", offset.float())
        self.register_buffer("scale", scale.float())


def _fit_one(values: np.ndarray, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    if mode == "image":
        return torch.tensor(127.5), torch.tensor(1.0 / 127.5)
    flat = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    dim_shape = values.shape[1:]
    if mode == "identity":
        offset, scale = np.zeros(flat.shape[1]), np.ones(flat.shape[1])
    elif mode == "limits":
        lo, hi = flat.min(axis=0), flat.max(axis=0)
        span = hi - lo
        constant = span < EPS
        scale = np.where(constant, 1.0, 2.0 / np.maximum(span, EPS))
        offset = np.where(constant, lo, (hi + lo) / 2.0)
    elif mode == "gaussian":
        mean, std = flat.mean(axis=0), flat.std(axis=0)
        offset, scale = mean, 1.0 / np.maximum(std, EPS)
    else:
        raise ValueError(f"unknown normalizer mode {mode!r}; known: {', '.join(MODES)}")
    return torch.from_numpy(offset.reshape(dim_shape)), torch.from_numpy(scale.reshape(dim_shape))


class Normalizer(nn.Module):
    """Maps each key to a normalized space and back. Build with `fit`, or empty + load_state_dict."""

    def __init__(self, modes: Mapping[str, str], shapes: Mapping[str, tuple[int, ...]]) -> None:
        super().__init__()
        for key, mode in modes.items():
            if mode not in MODES:
                raise ValueError(f"unknown normalizer mode {mode!r} for key {key!r}; known: {', '.join(MODES)}")
        self.modes = dict(modes)
        self.maps = nn.ModuleDict()
        for key, mode in self.modes.items():
            if mode == "image":  # fixed map, nothing to fit
                self.maps[key] = _Affine(torch.tensor(127.5), torch.tensor(1.0 / 127.5))
            else:
                shape = tuple(shapes[key])
                self.maps[key] = _Affine(torch.zeros(shape), torch.ones(shape))

    @classmethod
    def fit(cls, arrays: Mapping[str, np.ndarray], modes: Mapping[str, str]) -> Normalizer:
        """Fit from whole-dataset arrays {key: [N, ...]} (e.g. DemoStore.load())."""
        missing = [k for k in modes if k not in arrays]
        if missing:
            raise KeyError(f"normalizer keys {missing} are not in the data; available: {sorted(arrays)}")
        norm = cls(modes, {k: tuple(arrays[k].shape[1:]) for k in modes})
        for key, mode in modes.items():
            offset, scale = _fit_one(arrays[key], mode)
            norm.maps[key].offset.copy_(offset)
            norm.maps[key].scale.copy_(scale)
        return norm

    def config(self) -> dict:
        """Plain data that rebuilds an empty normalizer of the same structure."""
        return {
            "modes": dict(self.modes),
            "shapes": {k: list(m.offset.shape) for k, m in self.maps.items()},
        }

    @classmethod
    def from_config(cls, cfg: Mapping) -> Normalizer:
        return cls(cfg["modes"], {k: tuple(v) for k, v in cfg["shapes"].items()})

    def _check(self, key: str) -> _Affine:
        if key not in self.maps:
            raise KeyError(f"normalizer has no key {key!r}; it knows {sorted(self.maps)}")
        return self.maps[key]

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        m = self._check(key)
        return (x.float() - m.offset) * m.scale

    def unnormalize(self, key: str, y: torch.Tensor) -> torch.Tensor:
        m = self._check(key)
        return y.float() / m.scale + m.offset
