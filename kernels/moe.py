"""Public MoE ops. Each dispatches to a backend with the semantics of kernels/reference.py.

Backend choice: Triton on CUDA, the fastest PyTorch path elsewhere; the environment variable
KERNELS_BACKEND=triton|torch forces either (Triton on CPU tensors runs only under TRITON_INTERPRET=1,
set before triton is first imported). The Triton module is imported lazily for that reason.

The PyTorch path was chosen by benchmarks/kernels.py on the default CPU model (width 128, expert
hidden 256, 4 experts, top-2, 13 tokens, fp32; results in benchmarks/results/kernels-cpu.jsonl): the
per-expert loop and torch._grouped_mm are within noise of each other (the work is GEMM-bound), the
dense all-experts GEMM is 2-3x slower (E/k times the FLOPs). _grouped_mm wins the tie because it needs
no host sync; the loop covers what it cannot do (other dtypes, unaligned sizes, pre-Hopper GPUs).
"""

from __future__ import annotations

import os

import torch

from kernels.reference import route_reference
from kernels.torch_moe import (
    cached_moe_mlp_torch,
    grouped_mm_supported,
    moe_mlp_grouped_mm,
    moe_mlp_loop,
)

_BACKENDS = ("triton", "torch")


def backend_for(x: torch.Tensor) -> str:
    """'triton' or 'torch' for a tensor on x's device, honouring KERNELS_BACKEND."""
    forced = os.environ.get("KERNELS_BACKEND", "").strip().lower()
    if forced and forced not in _BACKENDS:
        raise ValueError(f"KERNELS_BACKEND={forced!r}: use one of {_BACKENDS} or leave it unset")
    if forced == "triton" and not x.is_cuda and os.environ.get("TRITON_INTERPRET", "0") != "1":
        raise RuntimeError(
            "KERNELS_BACKEND=triton on CPU tensors needs TRITON_INTERPRET=1 set before triton is imported; "
            "unset KERNELS_BACKEND to use the PyTorch path"
        )
    if forced:
        return forced
    return "triton" if x.is_cuda else "torch"


def _check_shapes(x, w13, w2, ids, weights, n_lead: int) -> None:
    if w13.dim() != 3 or w2.dim() != 3:
        raise ValueError(
            f"w13 must be [E, 2h, d] and w2 [E, d, h], got {tuple(w13.shape)} and {tuple(w2.shape)}"
        )
    n_exp, two_h, d = w13.shape
    if two_h % 2 or tuple(w2.shape) != (n_exp, d, two_h // 2) or x.shape[-1] != d or x.dim() != n_lead + 1:
        raise ValueError(
            f"inconsistent MoE shapes: x {tuple(x.shape)}, w13 {tuple(w13.shape)} (expected [E, 2h, d]), "
            f"w2 {tuple(w2.shape)} (expected [E, d, h])"
        )
    lead = tuple(x.shape[:1]) if n_lead == 2 else ()
    integer = ids.dtype in (torch.int32, torch.int64)
    if ids.shape != weights.shape or tuple(ids.shape[:-1]) != lead or not integer:
        raise ValueError(
            f"ids and weights must both be {'[B, k]' if lead else '[k]'} (ids integer); "
            f"got ids {tuple(ids.shape)} {ids.dtype}, weights {tuple(weights.shape)}"
        )


def _compute_dtype(x, w13, w2):
    """The Triton kernels need one dtype: autocast's on this device if active, else x's."""
    if torch.is_autocast_enabled(x.device.type):
        dt = torch.get_autocast_dtype(x.device.type)
    else:
        dt = x.dtype
    return x.to(dt), w13.to(dt), w2.to(dt)


def moe_mlp(
    x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Per-sample routed SwiGLU experts: x [B, T, d], ids/weights [B, k] -> [B, T, d]."""
    _check_shapes(x, w13, w2, ids, weights, n_lead=2)
    if backend_for(x) == "triton":
        from kernels.triton_moe import moe_mlp_triton

        return moe_mlp_triton(*_compute_dtype(x, w13, w2), ids, weights)
    # torch._grouped_mm on CUDA wants Hopper or newer.
    hopper = not x.is_cuda or torch.cuda.get_device_capability(x.device) >= (9, 0)
    if grouped_mm_supported(x, w13) and hopper:
        return moe_mlp_grouped_mm(x, w13, w2, ids, weights)
    return moe_mlp_loop(x, w13, w2, ids, weights)


def cached_moe_mlp(
    x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """One routing for all rows (expert caching at inference): x [M, d], ids/weights [k] -> [M, d].
    Reads ids and weights on the device: no host sync, capturable in a CUDA graph."""
    _check_shapes(x, w13, w2, ids, weights, n_lead=1)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x, w13, w2, weights))
    if backend_for(x) == "triton" and not needs_grad:  # the Triton kernel has no backward
        from kernels.triton_moe import cached_moe_mlp_triton

        return cached_moe_mlp_triton(*_compute_dtype(x, w13, w2), ids, weights)
    return cached_moe_mlp_torch(x, w13, w2, ids, weights)


def route(
    logits: torch.Tensor, k: int, training: bool = False, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Softmax router with top-k (sampled while training); see kernels/reference.py. A [B, E] softmax
    and top-k are a few tiny launches, so every device uses the PyTorch twin."""
    return route_reference(logits, k, training, generator)
