"""Host side of the Triton MoE path: block choice, launches, and the autograd Function.

Import this module only when the Triton backend is used: under TRITON_INTERPRET=1 the variable must
be set before triton is imported (kernels/moe.py imports it lazily for that reason).
"""

from __future__ import annotations

import os

import torch
import triton

from kernels import triton_kernels as K

_MIN_BLOCK = 16  # tl.dot's smallest tile side; the interpreter would not complain, the GPU would


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _check_blocks(**blocks: int) -> None:
    for name, b in blocks.items():
        assert b >= _MIN_BLOCK and b & (b - 1) == 0, f"{name}={b}: blocks must be powers of two >= 16"


def _check_covers(size: int, block: int, grid: int, what: str) -> None:
    # Every kernel masks its tails; the grid must still reach the last element.
    assert grid * block >= size, f"grid of {grid} x {block} does not cover {what}={size}"


def _prec(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


def _blocks(kind: str, dtype: torch.dtype) -> dict:
    """Tile sizes per kernel kind. The interpreter gets the smallest legal tiles so that small test
    shapes still span several tiles and partial ones; the GPU gets sizes suited to Hopper-class parts."""
    if _interpreting():
        return dict(BM=16, BN=16, BK=16, num_warps=4)
    bk = 32 if dtype == torch.float32 else 64
    table = {
        "gate_up": dict(BM=64, BN=64, BK=bk, num_warps=4, num_stages=3),
        "mm": dict(BM=64, BN=128, BK=bk, num_warps=4, num_stages=3),
        "down_bwd": dict(BM=64, BN=64, BK=bk, num_warps=4, num_stages=3),
        "dw": dict(BM=64, BN=128, BK=bk, num_warps=4, num_stages=3),
    }
    return dict(table[kind])


def _e_p2(n_experts: int) -> int:
    return max(2, triton.next_power_of_2(n_experts))


def sort_routes(ids: torch.Tensor, n_experts: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """perm (sorted position -> assignment), pos (its inverse), seg [E+1] expert offsets; one launch."""
    flat = ids.reshape(-1).to(torch.int32)
    n = flat.numel()
    perm = torch.empty(n, dtype=torch.int32, device=ids.device)
    pos = torch.empty_like(perm)
    seg = torch.empty(n_experts + 1, dtype=torch.int32, device=ids.device)
    block = max(_MIN_BLOCK, min(triton.next_power_of_2(n), 4096))
    K.sort_kernel[(1,)](flat, perm, pos, seg, n, n_experts, BLOCK=block)
    return perm, pos, seg


def _row_grid(n_rows: int, n_experts: int, bm: int) -> int:
    # Upper bound on tiles when each expert's rows start a new tile: no host sync needed.
    return triton.cdiv(n_rows, bm) + n_experts


def _combine(y: torch.Tensor, pos: torch.Tensor, b: int, t: int, k: int, out_dtype: torch.dtype) -> torch.Tensor:
    d = y.shape[1]
    out = torch.empty(b, t, d, dtype=out_dtype, device=y.device)
    br, bc = 16, min(128, max(_MIN_BLOCK, triton.next_power_of_2(d)))
    _check_blocks(BR=br, BC=bc)
    grid = (triton.cdiv(b * t, br), triton.cdiv(d, bc))
    K.combine_kernel[grid](y, pos, out, b * t, t, k, d, BR=br, BC=bc)
    return out


def _grouped_mm(a, b3, b_strides, perm, seg, wt, t, n_out, weighted):
    """C[r] = A[r] @ B_e where B_e's element (kk, n) sits at b3 + e*s0 + kk*s1 + n*s2."""
    rows, k_dim = a.shape
    n_exp = b3.shape[0]
    cfg = _blocks("mm", a.dtype)
    bm, bn, bk = cfg.pop("BM"), cfg.pop("BN"), cfg.pop("BK")
    _check_blocks(BM=bm, BN=bn, BK=bk)
    c = torch.empty(rows, n_out, dtype=a.dtype, device=a.device)
    grid = (_row_grid(rows, n_exp, bm), triton.cdiv(n_out, bn))
    _check_covers(n_out, bn, grid[1], "N")
    K.grouped_mm_kernel[grid](a, b3, perm, seg, wt, c, t, n_exp, k_dim, n_out, *b_strides,
                              WEIGHTED=weighted, PREC=_prec(a.dtype), BM=bm, BN=bn, BK=bk,
                              E_P2=_e_p2(n_exp), **cfg)  # fmt: skip
    return c


def _grouped_dw(lhs, rhs, perm, seg, wt, t, k, m, n, n_exp, gather_l, scale_l, gather_r, out_dtype):
    cfg = _blocks("dw", lhs.dtype)
    bm, bn, bk = cfg.pop("BM"), cfg.pop("BN"), cfg.pop("BK")
    _check_blocks(BM=bm, BN=bn, BK=bk)
    dw = torch.empty(n_exp, m, n, dtype=out_dtype, device=lhs.device)
    grid = (n_exp * triton.cdiv(m, bm) * triton.cdiv(n, bn),)
    K.grouped_dw_kernel[grid](lhs, rhs, perm, seg, wt, dw, t, k, n_exp, m, n, GATHER_L=gather_l,
                              SCALE_L=scale_l, GATHER_R=gather_r, PREC=_prec(lhs.dtype), BM=bm, BN=bn,
                              BK=bk, **cfg)  # fmt: skip
    return dw


class MoEMLPFunction(torch.autograd.Function):
    """moe_mlp on the Triton kernels; gradients for x, w13, w2 and the routing weights."""

    @staticmethod
    def forward(ctx, x, w13, w2, ids, weights, train):
        b, t, d = x.shape
        n_exp, two_h, _ = w13.shape
        h, k = two_h // 2, ids.shape[1]
        x = x.contiguous()
        wt = weights.reshape(-1).contiguous()
        perm, pos, seg = sort_routes(ids, n_exp)
        rows = b * k * t
        act = torch.empty(rows, h, dtype=x.dtype, device=x.device)
        gu = torch.empty(rows, two_h, dtype=x.dtype, device=x.device) if train else act
        cfg = _blocks("gate_up", x.dtype)
        bm, bn, bk = cfg.pop("BM"), cfg.pop("BN"), cfg.pop("BK")
        _check_blocks(BM=bm, BN=bn, BK=bk)
        grid = (_row_grid(rows, n_exp, bm), triton.cdiv(h, bn))
        _check_covers(h, bn, grid[1], "h")
        K.gate_up_kernel[grid](x, w13, perm, seg, act, gu, t, k, n_exp, d, h, *w13.stride(),
                               STORE_GU=train, PREC=_prec(x.dtype), BM=bm, BN=bn, BK=bk,
                               E_P2=_e_p2(n_exp), **cfg)  # fmt: skip
        # Down projection with the routing weight in its epilogue, then the fixed-order sum over k.
        w2_strides = (w2.stride(0), w2.stride(2), w2.stride(1))
        ys = _grouped_mm(act, w2, w2_strides, perm, seg, wt, t, d, weighted=True)
        out = _combine(ys, pos, b, t, k, x.dtype)
        if train:
            ctx.save_for_backward(x, w13, w2, wt, perm, pos, seg, act, gu)
            ctx.dims = (b, t, d, h, k, n_exp)
            ctx.w_dtype = weights.dtype
        return out

    @staticmethod
    def backward(ctx, gy):
        x, w13, w2, wt, perm, pos, seg, act, gu = ctx.saved_tensors
        b, t, d, h, k, n_exp = ctx.dims
        gy = gy.contiguous().to(x.dtype)
        rows = act.shape[0]
        cfg = _blocks("down_bwd", x.dtype)
        bm, bn, bk = cfg.pop("BM"), cfg.pop("BN"), cfg.pop("BK")
        _check_blocks(BM=bm, BN=bn, BK=bk)
        grid = (_row_grid(rows, n_exp, bm), triton.cdiv(h, bn))
        _check_covers(h, bn, grid[1], "h")
        dgu = torch.empty_like(gu)
        dwp = torch.empty(rows, grid[1], dtype=torch.float32, device=x.device)
        K.down_bwd_kernel[grid](gy, w2, gu, perm, seg, wt, dgu, dwp, t, k, n_exp, d, h, *w2.stride(),
                                PREC=_prec(x.dtype), BM=bm, BN=bn, BK=bk, E_P2=_e_p2(n_exp), **cfg)  # fmt: skip
        dx = dw13 = dw2 = dweights = None
        if ctx.needs_input_grad[0]:
            dxs = _grouped_mm(dgu, w13, w13.stride(), perm, seg, wt, t, d, weighted=False)
            dx = _combine(dxs, pos, b, t, k, x.dtype)
        if ctx.needs_input_grad[1]:
            dw13 = _grouped_dw(dgu, x, perm, seg, wt, t, k, 2 * h, d, n_exp, False, False, True, w13.dtype)
        if ctx.needs_input_grad[2]:
            dw2 = _grouped_dw(gy, act, perm, seg, wt, t, k, d, h, n_exp, True, True, False, w2.dtype)
        if ctx.needs_input_grad[4]:
            # Per-assignment sums in sorted order (fixed order: deterministic), then back to [B, k].
            per_sorted = dwp.view(b * k, -1).sum(dim=1)
            dweights = per_sorted[pos.long()].view(b, k).to(ctx.w_dtype)
        return dx, dw13, dw2, None, dweights, None


def moe_mlp_triton(
    x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    # Grad mode is off inside Function.forward, so whether to keep activations is decided here.
    train = torch.is_grad_enabled() and any(t.requires_grad for t in (x, w13, w2, weights))
    return MoEMLPFunction.apply(x, w13, w2, ids, weights, train)


def cached_moe_mlp_triton(
    x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Inference only (no autograd): two launches, ids and weights read on the device."""
    m, d = x.shape
    h = w13.shape[1] // 2
    k = ids.shape[0]
    x = x.contiguous()
    if _interpreting():
        bm, bn, bk, cfg = 16, 16, 16, {}
    else:
        bm = min(64, max(_MIN_BLOCK, triton.next_power_of_2(m)))
        bn, bk = 64, (32 if x.dtype == torch.float32 else 64)
        cfg = dict(num_warps=4, num_stages=3)
    _check_blocks(BM=bm, BN=bn, BK=bk)
    act = torch.empty(k * m, h, dtype=x.dtype, device=x.device)
    grid = (k, triton.cdiv(m, bm), triton.cdiv(h, bn))
    K.cached_gate_up_kernel[grid](x, w13, ids, act, m, d, h, *w13.stride(), PREC=_prec(x.dtype),
                                  BM=bm, BN=bn, BK=bk, **cfg)  # fmt: skip
    out = torch.empty(m, d, dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(m, bm), triton.cdiv(d, bn))
    _check_covers(d, bn, grid[1], "d")
    K.cached_down_kernel[grid](act, w2, ids, weights, out, m, d, h, k, *w2.stride(), PREC=_prec(x.dtype),
                               BM=bm, BN=bn, BK=bk, **cfg)  # fmt: skip
    return out
