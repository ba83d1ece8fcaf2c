"""Fast pure-PyTorch paths for moe_mlp (same semantics as kernels/reference.py).

Three strategies, all differentiable through plain autograd:
  loop        sort the B*k (sample, choice) assignments by expert, one SwiGLU per expert
  grouped_mm  the same sort, then torch._grouped_mm over the expert segments (two launches)
  dense       every expert on every sample as two big GEMMs, unchosen experts weighted 0
benchmarks/kernels.py measures them; kernels/moe.py dispatches to the winner.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sort_by_expert(ids: torch.Tensor, n_experts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stable order of the flattened assignments by expert and the per-expert counts (no host sync)."""
    flat = ids.reshape(-1)
    order = torch.argsort(flat, stable=True)
    counts = torch.zeros(n_experts, dtype=torch.int64, device=ids.device)
    counts.scatter_add_(0, flat, torch.ones_like(flat))
    return order, counts


def _unsort_and_combine(y: torch.Tensor, order: torch.Tensor, w: torch.Tensor, shape: tuple) -> torch.Tensor:
    """y [B*k, T, d] in expert order -> weighted sum over the k choices, in choice order (deterministic)."""
    b, t, d = shape
    k = order.numel() // b
    inv = torch.empty_like(order)
    inv[order] = torch.arange(order.numel(), device=order.device)
    y = y[inv].view(b, k, t, d) * w.view(b, k, 1, 1).to(y.dtype)
    return y.sum(dim=1)


def moe_mlp_loop(
    x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """One SwiGLU per non-empty expert over its gathered samples (syncs once for the counts)."""
    b, t, d = x.shape
    k = ids.shape[1]
    h = w13.shape[1] // 2
    order, counts = sort_by_expert(ids, w13.shape[0])
    xs = x[order // k]
    parts = []
    start = 0
    for e, c in enumerate(counts.tolist()):
        if c == 0:
            continue
        gu = xs[start : start + c] @ w13[e].t()
        parts.append((F.silu(gu[..., :h]) * gu[..., h:]) @ w2[e].t())
        start += c
    return _unsort_and_combine(torch.cat(parts), order, weights, (b, t, d))


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward hands on a dense gradient: _grouped_mm's backward rejects broadcast ones."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        return g.contiguous()


def grouped_mm_supported(x: torch.Tensor, w13: torch.Tensor) -> bool:
    """torch._grouped_mm needs 16-byte aligned strides and fp32/bf16 (bf16 only on CUDA)."""
    if not hasattr(torch, "_grouped_mm"):
        return False
    ok_dtype = x.dtype == torch.bfloat16 if x.is_cuda else x.dtype in (torch.float32, torch.bfloat16)
    per16 = 16 // x.element_size()
    h = w13.shape[1] // 2
    return ok_dtype and x.shape[-1] % per16 == 0 and h % per16 == 0


def moe_mlp_grouped_mm(
    x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Both expert GEMMs as torch._grouped_mm over the rows sorted by expert (no host sync)."""
    b, t, d = x.shape
    k = ids.shape[1]
    h = w13.shape[1] // 2
    order, counts = sort_by_expert(ids, w13.shape[0])
    offs = (torch.cumsum(counts, 0) * t).to(torch.int32)
    xs = x[order // k].reshape(-1, d)
    gu = _ContiguousGrad.apply(torch._grouped_mm(xs, w13.transpose(1, 2), offs=offs))
    act = F.silu(gu[:, :h]) * gu[:, h:]
    y = _ContiguousGrad.apply(torch._grouped_mm(act, w2.transpose(1, 2), offs=offs))
    return _unsort_and_combine(y.view(b * k, t, d), order, weights, (b, t, d))


def moe_mlp_dense(
    x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """All E experts on all samples in two GEMMs; the gate matrix [B, E] zeroes the unchosen ones.

    Costs E/k times the FLOPs of the sparse paths but needs no gather, sort or per-expert launch,
    which wins when the experts are small.
    """
    b, t, d = x.shape
    n_exp, two_h, _ = w13.shape
    h = two_h // 2
    gate = torch.zeros(b, n_exp, dtype=x.dtype, device=x.device)
    gate = gate.scatter_add(1, ids, weights.to(x.dtype))
    gu = (x.reshape(b * t, d) @ w13.reshape(n_exp * two_h, d).t()).view(b, t, n_exp, two_h)
    act = F.silu(gu[..., :h]) * gu[..., h:] * gate.view(b, 1, n_exp, 1)
    w2_stacked = w2.transpose(1, 2).reshape(n_exp * h, d)
    return (act.reshape(b * t, n_exp * h) @ w2_stacked).view(b, t, d)


def cached_moe_mlp_torch(
    x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Inference with one routing for all M rows, summed over the k experts in order.

    On CUDA the k experts' weights are gathered on the device (no host sync: capturable in a CUDA
    graph) and run as two batched GEMMs; on the CPU, where reading ids costs nothing, the experts'
    weights are used in place, which skips copying them.
    """
    if x.is_cuda:
        return cached_moe_mlp_gathered(x, w13, w2, ids, weights)
    experts, w = ids.tolist(), weights.to(x.dtype)
    order = sorted(range(len(experts)), key=experts.__getitem__)  # ascending: one positive stride
    if order != list(range(len(experts))):
        experts, w = [experts[i] for i in order], w[order]
    gaps = {b - a for a, b in zip(experts, experts[1:])}
    if len(gaps) <= 1 and 0 not in gaps:  # evenly spaced ids (always true for k <= 2)
        return _cached_strided(x, w13, w2, experts[0], gaps.pop() if gaps else 1, len(experts), w)
    h = w13.shape[1] // 2
    out = None
    for j, e in enumerate(experts):
        gu = F.linear(x, w13[e])
        y = F.linear(F.silu(gu[:, :h]) * gu[:, h:], w2[e]) * w[j]
        out = y if out is None else out + y
    return out


def _expert_view(w: torch.Tensor, first: int, step: int, k: int) -> torch.Tensor:
    """Experts first, first+step, ... of a stacked [E, ...] weight as one strided view (no copy)."""
    s = w.stride()
    return w.as_strided((k, *w.shape[1:]), (step * s[0], *s[1:]), w.storage_offset() + first * s[0])


def _cached_strided(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, first: int, step: int, k: int,
                    w: torch.Tensor) -> torch.Tensor:
    """k experts as two batched GEMMs over in-place views of the stacked weights, then a sum over k."""
    h = w13.shape[1] // 2
    gu = torch.matmul(x, _expert_view(w13, first, step, k).transpose(1, 2))  # [k, M, 2h]
    hidden = F.silu(gu[..., :h]) * gu[..., h:] * w.view(k, 1, 1)
    return torch.matmul(hidden, _expert_view(w2, first, step, k).transpose(1, 2)).sum(0)


def cached_moe_mlp_gathered(
    x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """The device-side variant: gather the k experts' weights by ids on the device, two batched GEMMs."""
    h = w13.shape[1] // 2
    k = ids.shape[0]
    gu = torch.bmm(x.expand(k, -1, -1), w13.index_select(0, ids).transpose(1, 2))
    act = F.silu(gu[..., :h]) * gu[..., h:] * weights.to(x.dtype).view(k, 1, 1)
    return torch.bmm(act, w2.index_select(0, ids).transpose(1, 2)).sum(dim=0)
