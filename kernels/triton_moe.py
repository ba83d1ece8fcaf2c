"""Host side of the Triton MoE path: block choice, launches, and the autograd Function.

Import this module only when the Triton backend is used: under TRITON_INTERPRET=1 the variable must
be set before triton is imported (kernels/moe.py imports it lazily for that reason).
"""

from __future__ import annotations

import os
import warnings

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


def _cfg(bm: int, bn: int, bk: int, warps: int, stages: int) -> triton.Config:
    return triton.Config(dict(BM=bm, BN=bn, BK=bk), num_warps=warps, num_stages=stages)


# Candidate tiles on CUDA; the first of each list is the fixed choice when autotuning is off.
_CONFIGS = {
    "gate_up": [_cfg(64, 64, 64, 4, 3), _cfg(128, 64, 64, 8, 3)],
    "mm": [_cfg(64, 128, 64, 4, 3), _cfg(128, 128, 64, 8, 3), _cfg(128, 64, 64, 4, 4)],
    "dw": [_cfg(64, 128, 64, 4, 3), _cfg(128, 128, 64, 8, 3)],
    "down_bwd": [_cfg(64, 64, 64, 4, 3)],
}
_KERNELS = {"gate_up": K.gate_up_kernel, "mm": K.grouped_mm_kernel, "dw": K.grouped_dw_kernel,
            "down_bwd": K.down_bwd_kernel}  # fmt: skip
_TUNE_KEYS = {"gate_up": ["d", "h"], "mm": ["K", "N"], "dw": ["M", "N"]}
_tuners: dict = {}  # kind -> triton Autotuner (benchmarks the configs on the first call per key)
_best: dict = {}  # (kind, key, dtype, constexprs) -> the winning Config, launched directly afterwards


def _autotune_on() -> bool:
    return not _interpreting() and os.environ.get("KERNELS_AUTOTUNE", "1") != "0" and "off" not in _tuners


def _launch(kind: str, grid_fn, args: tuple, tune_key: tuple = (), **consts) -> None:
    """Launch kernel `kind`; grid_fn(meta) -> grid. On CUDA the kinds in _TUNE_KEYS are autotuned once
    per shape key (then launched without the autotuner's per-call overhead); otherwise the first
    config is used. The interpreter gets 16-wide tiles, so small test shapes span several tiles."""
    opts: dict = {}
    if _interpreting():
        meta = dict(BM=16, BN=16, BK=16)
    elif kind in _TUNE_KEYS and _autotune_on():
        key = (kind, tune_key, args[0].dtype, tuple(sorted(consts.items())))
        if key not in _best:
            try:
                if kind not in _tuners:
                    tune = triton.autotune(configs=_CONFIGS[kind], key=_TUNE_KEYS[kind])
                    _tuners[kind] = tune(_KERNELS[kind])
                _tuners[kind][grid_fn](*args, **consts)
                _best[key] = _tuners[kind].best_config
                return
            except Exception as err:  # a tuning failure must not stop training: fall back to fixed tiles
                warnings.warn(f"Triton autotuning failed ({err!r}); fixed tiles from now on", stacklevel=2)
                _tuners["off"] = True
        cfg = _best.get(key, _CONFIGS[kind][0])
        meta, opts = dict(cfg.kwargs), dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    else:
        cfg = _CONFIGS[kind][0]
        meta, opts = dict(cfg.kwargs), dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages)
        if args[0].dtype == torch.float32:
            meta["BK"] = 32  # fp32 tiles take twice the shared memory
    _check_blocks(**meta)
    _KERNELS[kind][grid_fn(meta)](*args, **consts, **meta, **opts)


def best_configs() -> dict[str, str]:
    """The autotuned tiles chosen so far (for benchmark logs)."""
    return {f"{k[0]} {k[1]} {k[2]}": str(v) for k, v in _best.items()}


def _e_p2(n_experts: int) -> int:
    # One compiled variant for up to 16 experts (the per-expert scan is a 16-wide vector: free).
    return max(16, triton.next_power_of_2(n_experts))


def sort_routes(ids: torch.Tensor, n_experts: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """perm (sorted position -> assignment), pos (its inverse), seg [E+1] expert offsets; one launch."""
    flat = ids.reshape(-1)
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


def _combine(y: torch.Tensor, pos: torch.Tensor, b: int, t: int, k: int, out_dtype: torch.dtype):
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
    c = torch.empty(rows, n_out, dtype=a.dtype, device=a.device)

    def grid(meta):
        _check_covers(n_out, meta["BN"], triton.cdiv(n_out, meta["BN"]), "N")
        return (_row_grid(rows, n_exp, meta["BM"]), triton.cdiv(n_out, meta["BN"]))

    args = (a, b3, perm, seg, wt, c, t, n_exp, k_dim, n_out, *b_strides)
    _launch("mm", grid, args, (k_dim, n_out), WEIGHTED=weighted, PREC=_prec(a.dtype), E_P2=_e_p2(n_exp))
    return c


def _grouped_dw(lhs, rhs, perm, seg, wt, t, k, m, n, n_exp, gather_l, scale_l, gather_r, out_dtype):
    dw = torch.empty(n_exp, m, n, dtype=out_dtype, device=lhs.device)

    def grid(meta):
        return (n_exp * triton.cdiv(m, meta["BM"]) * triton.cdiv(n, meta["BN"]),)

    args = (lhs, rhs, perm, seg, wt, dw, t, k, n_exp, m, n)
    flags = dict(GATHER_L=gather_l, SCALE_L=scale_l, GATHER_R=gather_r)
    _launch("dw", grid, args, (m, n), PREC=_prec(lhs.dtype), **flags)
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

        def grid(meta):
            _check_covers(h, meta["BN"], triton.cdiv(h, meta["BN"]), "h")
            return (_row_grid(rows, n_exp, meta["BM"]), triton.cdiv(h, meta["BN"]))

        args = (x, w13, perm, seg, act, gu, t, k, n_exp, d, h, *w13.stride())
        _launch("gate_up", grid, args, (d, h), STORE_GU=train, PREC=_prec(x.dtype), E_P2=_e_p2(n_exp))
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
        # One partial routing-weight dot per (row, h tile): sized for the narrowest tile used.
        n_tiles = triton.cdiv(h, _MIN_BLOCK if _interpreting() else _CONFIGS["down_bwd"][0].kwargs["BN"])
        dgu = torch.empty_like(gu)
        dwp = torch.empty(rows, n_tiles, dtype=torch.float32, device=x.device)

        def grid(meta):
            assert triton.cdiv(h, meta["BN"]) == n_tiles, "dwp is sized for another tile width"
            return (_row_grid(rows, n_exp, meta["BM"]), n_tiles)

        args = (gy, w2, gu, perm, seg, wt, dgu, dwp, t, k, n_exp, d, h, *w2.stride())
        _launch("down_bwd", grid, args, PREC=_prec(x.dtype), E_P2=_e_p2(n_exp))
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
            dweights = per_sorted.index_select(0, pos).view(b, k).to(ctx.w_dtype)
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
        bm, bn, bn_down, bk, cfg = 16, 16, 16, 16, {}
    else:
        bm = min(64, max(_MIN_BLOCK, triton.next_power_of_2(m)))
        # Few rows: the kernels stream weights, so narrow output tiles buy more programs (bandwidth).
        bn, bn_down, bk = 64, (32 if m <= 64 else 64), (32 if x.dtype == torch.float32 else 64)
        cfg = dict(num_warps=4, num_stages=3)
    _check_blocks(BM=bm, BN=bn, BN_down=bn_down, BK=bk)
    act = torch.empty(k * m, h, dtype=x.dtype, device=x.device)
    grid = (k, triton.cdiv(m, bm), triton.cdiv(h, bn))
    K.cached_gate_up_kernel[grid](x, w13, ids, act, m, d, h, *w13.stride(), PREC=_prec(x.dtype),
                                  BM=bm, BN=bn, BK=bk, **cfg)  # fmt: skip
    out = torch.empty(m, d, dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(m, bm), triton.cdiv(d, bn_down))
    _check_covers(d, bn_down, grid[1], "d")
    K.cached_down_kernel[grid](act, w2, ids, weights, out, m, d, h, k, *w2.stride(), PREC=_prec(x.dtype),
                               BM=bm, BN=bn_down, BK=bk, **cfg)  # fmt: skip
    return out
