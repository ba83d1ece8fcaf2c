"""moe_mlp with gradients on the PyTorch path: one custom op (torch.library) with a fake and a backward.

Same semantics as kernels/reference.py moe_mlp_reference. Why a hand-written backward rather than autograd
through the sort, the grouped GEMMs and the combine: autograd's backward of the gather `x[order]` zero-fills
a [B, T, d] buffer and scatters into it with index_put(accumulate) (the slowest op of MoDE's training step
on the CPU after the GEMMs), and the weighted combine's backward is two full-size products and a reduction.
Here every sample's k copies go back by one gather and a fixed-order sum (deterministic), the routing weights
enter and leave through batched GEMMs ([B, 1, k] @ [B, k, T*d]), and the SwiGLU backward is one fused
silu_backward. As one custom op with a fake implementation the whole MoE is traceable: torch.compile sees
an opaque node with known output shapes (trainer.compile=true), and the backward is another.

Expert GEMMs run per expert on the rows sorted by expert: a loop of plain GEMMs over host counts (`loop`,
the CPU's choice: reading counts costs nothing there) or torch._grouped_mm with device offsets (`grouped`:
no host sync, for CUDA); both are exact twins, tests/kernels hold them to the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

STRATEGIES = ("loop", "grouped")


def _routing(ids: torch.Tensor, n_experts: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """order: the B*k assignments sorted by expert (stable); inv: its inverse; counts per expert."""
    flat = ids.reshape(-1)
    order = torch.argsort(flat, stable=True)
    inv = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel(), device=ids.device))
    counts = torch.bincount(flat, minlength=n_experts)
    return order, inv, counts


def _strategy(x: torch.Tensor, w13: torch.Tensor) -> str:
    from kernels.torch_moe import grouped_mm_supported

    if x.is_cuda and grouped_mm_supported(x, w13) and torch.cuda.get_device_capability(x.device) >= (9, 0):
        return "grouped"
    return "loop"


def _segments(counts: torch.Tensor, t: int) -> list[tuple[int, slice]]:
    bounds, start = [], 0
    for e, c in enumerate(counts.tolist()):
        if c:
            bounds.append((e, slice(start, start + c * t)))
        start += c * t
    return bounds


def _expert_forward(xs, w13, w2, counts, t, strategy):
    """gu [R, 2h] and y [R, d] of the rows xs [R, d] sorted by expert."""
    h = w13.shape[1] // 2
    if strategy == "grouped":
        offs = (torch.cumsum(counts, 0) * t).to(torch.int32)
        gu = torch._grouped_mm(xs, w13.transpose(1, 2), offs=offs)
        act = F.silu(gu[:, :h]) * gu[:, h:]
        return gu, torch._grouped_mm(act, w2.transpose(1, 2), offs=offs)
    gu = xs.new_empty(xs.shape[0], 2 * h)
    y = xs.new_empty(xs.shape[0], w2.shape[1])
    for e, rows in _segments(counts, t):
        torch.mm(xs[rows], w13[e].t(), out=gu[rows])
        torch.mm(F.silu(gu[rows, :h]) * gu[rows, h:], w2[e].t(), out=y[rows])
    return gu, y


def _expert_backward(gy, xs, gu, w13, w2, counts, t, strategy):
    """dxs [R, d], dw13 [E, 2h, d], dw2 [E, d, h] from gy [R, d] (the rows' output gradient, sorted)."""
    h = w13.shape[1] // 2
    gate, up = gu[:, :h], gu[:, h:]
    silu = F.silu(gate)
    act = silu * up
    if strategy == "grouped":
        offs = (torch.cumsum(counts, 0) * t).to(torch.int32)
        d_act = torch._grouped_mm(gy, w2, offs=offs)
        dgu = torch.cat([torch.ops.aten.silu_backward(d_act * up, gate), d_act * silu], dim=1)
        dxs = torch._grouped_mm(dgu, w13, offs=offs)
        dw2 = torch._grouped_mm(gy.t(), act, offs=offs)
        dw13 = torch._grouped_mm(dgu.t(), xs, offs=offs)
        return dxs, dw13, dw2
    dxs = torch.empty_like(xs)  # every row belongs to one segment
    dw13, dw2 = torch.zeros_like(w13), torch.zeros_like(w2)
    dgu = torch.empty_like(gu)
    for e, rows in _segments(counts, t):
        d_act = gy[rows] @ w2[e]
        dgu[rows, :h] = torch.ops.aten.silu_backward(d_act * up[rows], gate[rows])
        torch.mul(d_act, silu[rows], out=dgu[rows, h:])
        torch.mm(dgu[rows], w13[e], out=dxs[rows])
        torch.mm(gy[rows].t(), act[rows], out=dw2[e])
        torch.mm(dgu[rows].t(), xs[rows], out=dw13[e])
    return dxs, dw13, dw2


@torch.library.custom_op("mode_kernels::moe_mlp_train", mutates_args=())
def moe_mlp_train_fwd(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, ids: torch.Tensor,
                      weights: torch.Tensor, strategy: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out [B, T, d], gu [B*k*T, 2h] in expert order, ys [B, k, T*d]: each choice's unweighted output)."""
    b, t, d = x.shape
    k = ids.shape[1]
    order, inv, counts = _routing(ids, w13.shape[0])
    xs = x.index_select(0, order // k).reshape(-1, d)
    gu, y = _expert_forward(xs, w13.to(x.dtype), w2.to(x.dtype), counts, t, strategy)
    ys = y.view(b * k, t * d).index_select(0, inv).view(b, k, t * d)
    out = torch.bmm(weights.to(x.dtype).view(b, 1, k), ys).view(b, t, d)
    return out, gu, ys


@moe_mlp_train_fwd.register_fake
def _(x, w13, w2, ids, weights, strategy):
    b, t, d = x.shape
    k = ids.shape[1]
    return (x.new_empty(b, t, d), x.new_empty(b * k * t, w13.shape[1]), x.new_empty(b, k, t * d))


@torch.library.custom_op("mode_kernels::moe_mlp_train_backward", mutates_args=())
def moe_mlp_train_bwd(g: torch.Tensor, x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, ids: torch.Tensor,
                      weights: torch.Tensor, gu: torch.Tensor, ys: torch.Tensor, strategy: str
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dw13, dw2, dweights) of moe_mlp_train's `out` for its gradient g [B, T, d]."""
    b, t, d = x.shape
    k = ids.shape[1]
    order, inv, counts = _routing(ids, w13.shape[0])
    g = g.to(x.dtype).reshape(b, 1, t * d)
    dweights = torch.bmm(ys, g.transpose(1, 2)).view(b, k).to(weights.dtype)
    gy = (weights.to(x.dtype).view(b, k, 1) * g).view(b * k, t * d).index_select(0, order).view(-1, d)
    xs = x.index_select(0, order // k).reshape(-1, d)
    dxs, dw13, dw2 = _expert_backward(gy, xs, gu, w13.to(x.dtype), w2.to(x.dtype), counts, t, strategy)
    dx = dxs.view(b * k, t, d).index_select(0, inv).view(b, k, t, d).sum(dim=1)
    return dx, dw13.to(w13.dtype), dw2.to(w2.dtype), dweights


@moe_mlp_train_bwd.register_fake
def _(g, x, w13, w2, ids, weights, gu, ys, strategy):
    return torch.empty_like(x), torch.empty_like(w13), torch.empty_like(w2), torch.empty_like(weights)


def _setup_context(ctx, inputs, output) -> None:
    x, w13, w2, ids, weights, strategy = inputs
    _, gu, ys = output
    ctx.save_for_backward(x, w13, w2, ids, weights, gu, ys)
    ctx.strategy = strategy


def _backward(ctx, g_out, g_gu, g_ys):
    x, w13, w2, ids, weights, gu, ys = ctx.saved_tensors
    dx, dw13, dw2, dweights = moe_mlp_train_bwd(g_out.contiguous(), x, w13, w2, ids, weights, gu, ys,
                                                ctx.strategy)
    return dx, dw13, dw2, None, dweights, None


moe_mlp_train_fwd.register_autograd(_backward, setup_context=_setup_context)


def moe_mlp_train(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, ids: torch.Tensor,
                  weights: torch.Tensor, strategy: str | None = None) -> torch.Tensor:
    """Per-sample routed SwiGLU experts with gradients for x, w13, w2 and weights: x [B, T, d] -> [B, T, d]."""
    strategy = strategy or _strategy(x, w13)
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")
    return moe_mlp_train_fwd(x.contiguous(), w13, w2, ids, weights, strategy)[0]
