"""moe_mlp with gradients on the PyTorch path: one custom op (torch.library) with a fake and a backward.

Same semantics as kernels/reference.py moe_mlp_reference. Why a hand-written backward rather than autograd
through the sort, the grouped GEMMs and the combine: autograd's backward of the gather `x[order]` zero-fills
a [B, T, d] buffer and scatters into it with index_put(accumulate) (the slowest op of MoDE's training step
on the CPU after the GEMMs), and the weighted combine's backward is two full-size products and a reduction.
Here every sample's k copies go back by one gather and a fixed-order sum (deterministic), the routing weights
enter and leave through batched GEMMs ([B, 1, k] @ [B, k, T*d]), the SwiGLU backward is one fused
silu_backward, and what the forward computed (the rows in expert order, silu(gate), the activation) is kept
rather than computed again: a profile of the step (benchmarks/train_profile.py) put most of MoDE's extra time
against the dense DiT in those copies and recomputations, and in zero-filled gradients of the op's auxiliary
outputs, which are now never materialised. As one custom op with a fake implementation the whole MoE is
traceable: torch.compile sees an opaque node with known output shapes (trainer.compile=true), and the
backward is another.

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
    """gu [2, R, h] (gate and up), sa [2, R, h] (silu(gate) and the activation silu(gate) * up) and y [R, d]
    of the rows xs [R, d] sorted by expert. Each half is contiguous, so the elementwise ops run on dense
    memory; gu and sa are kept for the backward, which would otherwise compute them again."""
    h = w13.shape[1] // 2
    if strategy == "grouped":
        offs = (torch.cumsum(counts, 0) * t).to(torch.int32)
        both = torch._grouped_mm(xs, w13.transpose(1, 2), offs=offs)
        gu = torch.stack([both[:, :h], both[:, h:]])
        silu = F.silu(gu[0])
        sa = torch.stack([silu, silu * gu[1]])
        return gu, sa, torch._grouped_mm(sa[1], w2.transpose(1, 2), offs=offs)
    gu = xs.new_empty(2, xs.shape[0], h)
    sa = xs.new_empty(2, xs.shape[0], h)
    y = xs.new_empty(xs.shape[0], w2.shape[1])
    for e, rows in _segments(counts, t):
        torch.mm(xs[rows], w13[e, :h].t(), out=gu[0, rows])
        torch.mm(xs[rows], w13[e, h:].t(), out=gu[1, rows])
        torch.ops.aten.silu.out(gu[0, rows], out=sa[0, rows])
        torch.mul(sa[0, rows], gu[1, rows], out=sa[1, rows])
        torch.mm(sa[1, rows], w2[e].t(), out=y[rows])
    return gu, sa, y


def _expert_backward(gy, xs, gu, sa, w13, w2, counts, t, strategy):
    """dxs [R, d], dw13 [E, 2h, d], dw2 [E, d, h] from gy [R, d] (the rows' output gradient, sorted)."""
    h = w13.shape[1] // 2
    (gate, up), (silu, act) = gu, sa
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
    d_gate, d_up = torch.empty_like(gate), torch.empty_like(up)
    for e, rows in _segments(counts, t):
        d_act = gy[rows] @ w2[e]
        torch.ops.aten.silu_backward.grad_input(d_act * up[rows], gate[rows], grad_input=d_gate[rows])
        torch.mul(d_act, silu[rows], out=d_up[rows])
        torch.mm(d_gate[rows], w13[e, :h], out=dxs[rows])
        dxs[rows].addmm_(d_up[rows], w13[e, h:])
        torch.mm(gy[rows].t(), act[rows], out=dw2[e])
        torch.mm(d_gate[rows].t(), xs[rows], out=dw13[e, :h])
        torch.mm(d_up[rows].t(), xs[rows], out=dw13[e, h:])
    return dxs, dw13, dw2


# The op's outputs past `out` are saved for the backward and never used by the model: no gradient flows into
# them (their backward inputs are None, not zero tensors filled at every step). The version in the op's name
# changes with its outputs: torch.compile's on-disk cache keys graphs by op name, and a graph cached for the
# earlier outputs would fail on these.
@torch.library.custom_op("mode_kernels::moe_mlp_train_v2", mutates_args=())
def moe_mlp_train_fwd(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, ids: torch.Tensor,
                      weights: torch.Tensor, strategy: str
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out [B, T, d]; for the backward: xs [B*k*T, d] the rows in expert order, gu and sa [2, B*k*T, h] (see
    _expert_forward) and ys [B, k, T*d], each choice's unweighted output)."""
    b, t, d = x.shape
    k = ids.shape[1]
    order, inv, counts = _routing(ids, w13.shape[0])
    xs = x.index_select(0, order // k).reshape(-1, d)
    gu, sa, y = _expert_forward(xs, w13.to(x.dtype), w2.to(x.dtype), counts, t, strategy)
    ys = y.view(b * k, t * d).index_select(0, inv).view(b, k, t * d)
    out = torch.bmm(weights.to(x.dtype).view(b, 1, k), ys).view(b, t, d)
    return out, xs, gu, sa, ys


@moe_mlp_train_fwd.register_fake
def _(x, w13, w2, ids, weights, strategy):
    b, t, d = x.shape
    rows, h = b * ids.shape[1] * t, w13.shape[1] // 2
    return (x.new_empty(b, t, d), x.new_empty(rows, d), x.new_empty(2, rows, h), x.new_empty(2, rows, h),
            x.new_empty(b, ids.shape[1], t * d))


@torch.library.custom_op("mode_kernels::moe_mlp_train_backward_v2", mutates_args=())
def moe_mlp_train_bwd(g: torch.Tensor, x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, ids: torch.Tensor,
                      weights: torch.Tensor, xs: torch.Tensor, gu: torch.Tensor, sa: torch.Tensor, ys: torch.Tensor,
                      strategy: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dw13, dw2, dweights) of moe_mlp_train's `out` for its gradient g [B, T, d]."""
    b, t, d = x.shape
    k = ids.shape[1]
    order, inv, counts = _routing(ids, w13.shape[0])
    g = g.to(x.dtype).reshape(b, 1, t * d)
    dweights = torch.bmm(ys, g.transpose(1, 2)).view(b, k).to(weights.dtype)
    gy = (weights.to(x.dtype).view(b, k, 1) * g).view(b * k, t * d).index_select(0, order).view(-1, d)
    dxs, dw13, dw2 = _expert_backward(gy, xs, gu, sa, w13.to(x.dtype), w2.to(x.dtype), counts, t, strategy)
    dx = dxs.view(b * k, t, d).index_select(0, inv).view(b, k, t, d).sum(dim=1)
    return dx, dw13.to(w13.dtype), dw2.to(w2.dtype), dweights


@moe_mlp_train_bwd.register_fake
def _(g, x, w13, w2, ids, weights, xs, gu, sa, ys, strategy):
    return torch.empty_like(x), torch.empty_like(w13), torch.empty_like(w2), torch.empty_like(weights)


def _setup_context(ctx, inputs, output) -> None:
    x, w13, w2, ids, weights, strategy = inputs
    _, xs, gu, sa, ys = output
    ctx.save_for_backward(x, w13, w2, ids, weights, xs, gu, sa, ys)
    ctx.mark_non_differentiable(xs, gu, sa, ys)
    ctx.set_materialize_grads(False)
    ctx.strategy = strategy


def _backward(ctx, g_out, *unused_grads):
    x, w13, w2, ids, weights, xs, gu, sa, ys = ctx.saved_tensors
    if g_out is None:  # nothing downstream used `out`
        return None, None, None, None, None, None
    dx, dw13, dw2, dweights = moe_mlp_train_bwd(g_out.contiguous(), x, w13, w2, ids, weights, xs, gu, sa, ys,
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
