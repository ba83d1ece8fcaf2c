"""Fast pure-PyTorch paths for moe_mlp and cached_moe_mlp (same semantics as kernels/reference.py).

moe_mlp (per-sample routing), three strategies, all differentiable through plain autograd:
  loop        sort the B*k (sample, choice) assignments by expert, one SwiGLU per expert
  grouped_mm  the same sort, then torch._grouped_mm over the expert segments (two launches)
  dense       every expert on every sample as two big GEMMs, unchosen experts weighted 0
benchmarks/kernels.py measures them; kernels/moe.py dispatches to the winner.

cached_moe_mlp (one routing for all rows, inference): on the host the ids are read once and the k
experts run on their weights in place, no copy (HOST_VARIANTS: a loop of plain GEMMs, one fused gate-up
GEMM when the ids are consecutive, or batched GEMMs over one strided view); on CUDA the experts are
gathered on the device. kernels/moe.py records which host variant is fastest per shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.reference import cached_moe_mlp_reference


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
    x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor,
    variant: str | None = None,
) -> torch.Tensor:
    """Inference with one routing for all M rows, summed over the k experts.

    On CUDA the k experts' weights are gathered on the device (no host sync: capturable in a CUDA
    graph). Elsewhere, where reading ids costs nothing, the experts' weights are used in place (no copy)
    by one of the HOST_VARIANTS (default "loop"; kernels/moe.py keeps the per-shape choice).
    """
    if x.is_cuda:
        return cached_moe_mlp_gathered(x, w13, w2, ids, weights)
    if torch.is_grad_enabled() and weights.requires_grad:  # host floats would cut the routing gradient
        return cached_moe_mlp_reference(x, w13, w2, ids, weights)
    fn = HOST_VARIANTS[variant or DEFAULT_HOST_VARIANT]
    return fn(x, w13, w2, ids.tolist(), weights.to(x.dtype).tolist())


def _swiglu_hidden(gate_up: torch.Tensor, h: int) -> torch.Tensor:
    return F.silu(gate_up[..., :h]) * gate_up[..., h:]


def _down_sum(hidden: list[torch.Tensor], w2: torch.Tensor, experts: list[int], w: list[float]) -> torch.Tensor:
    """sum_j w_j * hidden_j @ w2[e_j]^T, the scale and the sum folded into the GEMMs (addmm's alpha)."""
    out = torch.mm(hidden[0], w2[experts[0]].t()).mul_(w[0])
    for act, e, wj in zip(hidden[1:], experts[1:], w[1:]):
        out = torch.addmm(out, act, w2[e].t(), alpha=wj)
    return out


def cached_loop(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, experts: list[int],
                w: list[float]) -> torch.Tensor:
    """Plain GEMMs on each chosen expert's contiguous weight slices, in the order given."""
    h = w13.shape[1] // 2
    return _down_sum([_swiglu_hidden(F.linear(x, w13[e]), h) for e in experts], w2, experts, w)


def cached_adjacent(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, experts: list[int],
                    w: list[float]) -> torch.Tensor:
    """Consecutive experts e..e+k-1 are one contiguous [k*2h, d] block of w13: one gate-up GEMM for all
    k, then the down GEMMs per expert on strided row views. Other id sets take the loop."""
    order = sorted(range(len(experts)), key=experts.__getitem__)
    first, k = experts[order[0]], len(experts)
    if [experts[i] for i in order] != list(range(first, first + k)):
        return cached_loop(x, w13, w2, experts, w)
    h, d = w13.shape[1] // 2, w13.shape[2]
    gate_up = F.linear(x, w13[first : first + k].reshape(k * 2 * h, d)).view(x.shape[0], k, 2 * h)
    hidden = _swiglu_hidden(gate_up, h)
    return _down_sum([hidden[:, j] for j in range(k)], w2, [first + j for j in range(k)], [w[i] for i in order])


def _expert_view(w: torch.Tensor, first: int, step: int, k: int) -> torch.Tensor:
    """Experts first, first+step, ... of a stacked [E, ...] weight as one strided view (no copy)."""
    s = w.stride()
    return w.as_strided((k, *w.shape[1:]), (step * s[0], *s[1:]), w.storage_offset() + first * s[0])


def cached_strided(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, experts: list[int],
                   w: list[float]) -> torch.Tensor:
    """Evenly spaced ids (always so for k <= 2) as two batched GEMMs over one strided view of the stacked
    weights, then a sum over k; other id sets take the loop."""
    order = sorted(range(len(experts)), key=experts.__getitem__)  # ascending: one positive stride
    es = [experts[i] for i in order]
    gaps = {b - a for a, b in zip(es, es[1:])}
    if len(gaps) > 1 or 0 in gaps:
        return cached_loop(x, w13, w2, experts, w)
    step, k, h = (gaps.pop() if gaps else 1), len(es), w13.shape[1] // 2
    scale = torch.tensor([w[i] for i in order], dtype=x.dtype).view(k, 1, 1)
    gate_up = torch.matmul(x, _expert_view(w13, es[0], step, k).transpose(1, 2))  # [k, M, 2h]
    hidden = _swiglu_hidden(gate_up, h) * scale
    return torch.matmul(hidden, _expert_view(w2, es[0], step, k).transpose(1, 2)).sum(0)


# name -> fn(x [M, d], w13, w2, experts: list[int], w: list[float]); all read the weights in place.
HOST_VARIANTS = {"loop": cached_loop, "adjacent": cached_adjacent, "strided": cached_strided}
# From benchmarks/inference.py's autotune lines on this 2-core CPU (M = 13-448 rows, width 128-1024): the
# fused gate-up GEMM of "adjacent" was fastest or within 2% in fp32 and bf16 (it is the loop when the ids
# are not consecutive); "strided" was up to 1.5x slower in fp32 at M = 448 and 20x slower in bf16 (the
# batched GEMM over a strided view takes a slow path), so it is kept only as a measured alternative.
DEFAULT_HOST_VARIANT = "adjacent"


def cached_moe_mlp_gathered(
    x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """The device-side variant: gather the k experts' weights by ids on the device, two batched GEMMs."""
    h = w13.shape[1] // 2
    k = ids.shape[0]
    gu = torch.bmm(x.expand(k, -1, -1), w13.index_select(0, ids).transpose(1, 2))
    act = F.silu(gu[..., :h]) * gu[..., h:] * weights.to(x.dtype).view(k, 1, 1)
    return torch.bmm(act, w2.index_select(0, ids).transpose(1, 2)).sum(dim=0)
