"""Triton kernels for per-sample-routed SwiGLU experts (launched from kernels/triton_moe.py).

Layout. The B*k (sample, choice) assignments are sorted by expert (`perm[p]` = assignment at sorted
position p, `pos` its inverse, `seg[e]:seg[e+1]` expert e's positions). Sorted row r = p*T + t is token
t of assignment perm[p]; its token lives in x row (perm[p] // k) * T + t. Row tiles of BM rows pack
several samples of one expert (T may be < 16); a tile never straddles two experts. The grid over row
tiles is an upper bound known without a host sync (cdiv(R, BM) + E); each program finds its expert
from the per-expert counts, and surplus programs run an empty K loop and store nothing.
Sizes that change from call to call (T, k, E, row counts) are not specialized, to bound recompiles.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit(do_not_specialize=["n_assign", "n_experts"])
def sort_kernel(ids_ptr, perm_ptr, pos_ptr, seg_ptr, n_assign, n_experts, BLOCK: tl.constexpr):
    """Stable counting sort of the flat expert ids in one program (n_assign is small: B*k)."""
    offs = tl.arange(0, BLOCK)
    start = tl.full([], 0, tl.int32)
    for e in range(n_experts):
        tl.store(seg_ptr + e, start)
        for c0 in range(0, n_assign, BLOCK):
            a = c0 + offs
            valid = a < n_assign
            hit = ((tl.load(ids_ptr + a, mask=valid, other=-1) == e) & valid).to(tl.int32)
            dest = start + tl.cumsum(hit, axis=0) - hit
            tl.store(perm_ptr + dest, a, mask=hit > 0)
            tl.store(pos_ptr + a, dest, mask=hit > 0)
            start += tl.sum(hit, axis=0)
    tl.store(seg_ptr + n_experts, start)


@triton.jit
def _expert_tile(seg_ptr, pid_m, T, n_experts, BM: tl.constexpr, E_P2: tl.constexpr):
    """Expert, first row and end row (exclusive) of row tile pid_m; empty when pid_m is surplus."""
    ee = tl.arange(0, E_P2)
    lo = tl.load(seg_ptr + ee, mask=ee < n_experts, other=0) * T
    hi = tl.load(seg_ptr + ee + 1, mask=ee < n_experts, other=0) * T
    tiles = (hi - lo + BM - 1) // BM
    cum = tl.cumsum(tiles, axis=0)
    e = tl.sum((cum <= pid_m).to(tl.int32), axis=0)
    here = ee == e
    first_tile = tl.sum(tl.where(here, cum - tiles, 0), axis=0)
    start = tl.sum(tl.where(here, lo, 0), axis=0) + (pid_m - first_tile) * BM
    end = tl.sum(tl.where(here, hi, 0), axis=0)
    return tl.minimum(e, n_experts - 1), start, end


@triton.jit
def _token_rows(perm_ptr, rows, row_mask, T, k):
    """x row of each sorted row, and its assignment index."""
    a = tl.load(perm_ptr + rows // T, mask=row_mask, other=0)
    return ((a // k) * T + rows % T).to(tl.int64), a


@triton.jit(do_not_specialize=["T", "k", "n_experts"])
def gate_up_kernel(
    x_ptr, w_ptr, perm_ptr, seg_ptr, act_ptr, gu_ptr,
    T, k, n_experts, d, h,
    s_we, s_wn, s_wk,
    STORE_GU: tl.constexpr, PREC: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, E_P2: tl.constexpr,
):  # fmt: skip
    """act = silu(x W_gate^T) * (x W_up^T) on gathered rows; gu (pre-activations) kept for backward."""
    e, start, end = _expert_tile(seg_ptr, tl.program_id(0), T, n_experts, BM, E_P2)
    rows = start + tl.arange(0, BM)
    rmask = rows < end
    xrow, _ = _token_rows(perm_ptr, rows, rmask, T, k)
    cols = tl.program_id(1) * BN + tl.arange(0, BN)
    cmask = cols < h
    kk = tl.arange(0, BK)
    w_base = w_ptr + e.to(tl.int64) * s_we + cols[None, :] * s_wn
    acc_g = tl.zeros((BM, BN), dtype=tl.float32)
    acc_u = tl.zeros((BM, BN), dtype=tl.float32)
    k_end = tl.where(start < end, d, 0)
    for k0 in range(0, k_end, BK):
        ks = k0 + kk
        km = ks < d
        xt = tl.load(x_ptr + xrow[:, None] * d + ks[None, :], mask=rmask[:, None] & km[None, :], other=0.0)
        wmask = km[:, None] & cmask[None, :]
        wg = tl.load(w_base + ks[:, None] * s_wk, mask=wmask, other=0.0)
        wu = tl.load(w_base + h * s_wn + ks[:, None] * s_wk, mask=wmask, other=0.0)
        acc_g = tl.dot(xt, wg, acc_g, input_precision=PREC)
        acc_u = tl.dot(xt, wu, acc_u, input_precision=PREC)
    act = acc_g * tl.sigmoid(acc_g) * acc_u
    omask = rmask[:, None] & cmask[None, :]
    r64 = rows.to(tl.int64)[:, None]
    tl.store(act_ptr + r64 * h + cols[None, :], act.to(act_ptr.dtype.element_ty), mask=omask)
    if STORE_GU:
        tl.store(gu_ptr + r64 * (2 * h) + cols[None, :], acc_g.to(gu_ptr.dtype.element_ty), mask=omask)
        tl.store(gu_ptr + r64 * (2 * h) + h + cols[None, :], acc_u.to(gu_ptr.dtype.element_ty), mask=omask)


@triton.jit(do_not_specialize=["T", "n_experts"])
def grouped_mm_kernel(
    a_ptr, b_ptr, perm_ptr, seg_ptr, wt_ptr, c_ptr,
    T, n_experts, K, N,
    s_be, s_bk, s_bn,
    WEIGHTED: tl.constexpr, PREC: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, E_P2: tl.constexpr,
):  # fmt: skip
    """C[r] = A[r] @ B_e (B_e by strides), times the routing weight of row r's assignment if WEIGHTED."""
    e, start, end = _expert_tile(seg_ptr, tl.program_id(0), T, n_experts, BM, E_P2)
    rows = start + tl.arange(0, BM)
    rmask = rows < end
    r64 = rows.to(tl.int64)
    cols = tl.program_id(1) * BN + tl.arange(0, BN)
    cmask = cols < N
    kk = tl.arange(0, BK)
    b_base = b_ptr + e.to(tl.int64) * s_be + cols[None, :] * s_bn
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    k_end = tl.where(start < end, K, 0)
    for k0 in range(0, k_end, BK):
        ks = k0 + kk
        km = ks < K
        at = tl.load(a_ptr + r64[:, None] * K + ks[None, :], mask=rmask[:, None] & km[None, :], other=0.0)
        bt = tl.load(b_base + ks[:, None] * s_bk, mask=km[:, None] & cmask[None, :], other=0.0)
        acc = tl.dot(at, bt, acc, input_precision=PREC)
    if WEIGHTED:
        a = tl.load(perm_ptr + rows // T, mask=rmask, other=0)
        acc = acc * tl.load(wt_ptr + a, mask=rmask, other=0.0).to(tl.float32)[:, None]
    omask = rmask[:, None] & cmask[None, :]
    tl.store(c_ptr + r64[:, None] * N + cols[None, :], acc.to(c_ptr.dtype.element_ty), mask=omask)


@triton.jit(do_not_specialize=["n_rows", "T", "k"])
def combine_kernel(y_ptr, pos_ptr, out_ptr, n_rows, T, k, d, BR: tl.constexpr, BC: tl.constexpr):
    """out[b, t] = sum_j y[pos[b*k + j] * T + t], summed in choice order j (deterministic, no atomics)."""
    rows = tl.program_id(0) * BR + tl.arange(0, BR)
    rmask = rows < n_rows
    cols = tl.program_id(1) * BC + tl.arange(0, BC)
    mask = rmask[:, None] & (cols < d)[None, :]
    b = rows // T
    acc = tl.zeros((BR, BC), dtype=tl.float32)
    for j in range(k):
        p = tl.load(pos_ptr + b * k + j, mask=rmask, other=0)
        src = (p * T + rows % T).to(tl.int64)
        acc += tl.load(y_ptr + src[:, None] * d + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    out = out_ptr + rows.to(tl.int64)[:, None] * d + cols[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["T", "k", "n_experts"])
def down_bwd_kernel(
    gy_ptr, w2_ptr, gu_ptr, perm_ptr, seg_ptr, wt_ptr, dgu_ptr, dwp_ptr,
    T, k, n_experts, d, h,
    s_we, s_wd, s_wh,
    PREC: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, E_P2: tl.constexpr,
):  # fmt: skip
    """P = gy[gathered] @ W2_e; epilogue: SwiGLU backward into dgu, and per-tile partial dots
    sum_i P * act (dwp[r, tile]) from which the routing-weight gradient is summed on the host."""
    e, start, end = _expert_tile(seg_ptr, tl.program_id(0), T, n_experts, BM, E_P2)
    rows = start + tl.arange(0, BM)
    rmask = rows < end
    xrow, a = _token_rows(perm_ptr, rows, rmask, T, k)
    cols = tl.program_id(1) * BN + tl.arange(0, BN)
    cmask = cols < h
    kk = tl.arange(0, BK)
    w_base = w2_ptr + e.to(tl.int64) * s_we + cols[None, :] * s_wh
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    k_end = tl.where(start < end, d, 0)
    for k0 in range(0, k_end, BK):
        ks = k0 + kk
        km = ks < d
        gt = tl.load(gy_ptr + xrow[:, None] * d + ks[None, :], mask=rmask[:, None] & km[None, :], other=0.0)
        wt = tl.load(w_base + ks[:, None] * s_wd, mask=km[:, None] & cmask[None, :], other=0.0)
        acc = tl.dot(gt, wt, acc, input_precision=PREC)
    omask = rmask[:, None] & cmask[None, :]
    r64 = rows.to(tl.int64)[:, None]
    g = tl.load(gu_ptr + r64 * (2 * h) + cols[None, :], mask=omask, other=0.0).to(tl.float32)
    u = tl.load(gu_ptr + r64 * (2 * h) + h + cols[None, :], mask=omask, other=0.0).to(tl.float32)
    sig = tl.sigmoid(g)
    silu = g * sig
    tl.store(dwp_ptr + rows.to(tl.int64) * tl.num_programs(1) + tl.program_id(1),
             tl.sum(acc * silu * u, axis=1), mask=rmask)  # fmt: skip
    dact = acc * tl.load(wt_ptr + a, mask=rmask, other=0.0).to(tl.float32)[:, None]
    dg = dact * u * sig * (1.0 + g * (1.0 - sig))
    dgu = dgu_ptr + r64 * (2 * h) + cols[None, :]
    tl.store(dgu, dg.to(dgu_ptr.dtype.element_ty), mask=omask)
    tl.store(dgu + h, (dact * silu).to(dgu_ptr.dtype.element_ty), mask=omask)


@triton.jit(do_not_specialize=["T", "k", "n_experts"])
def grouped_dw_kernel(
    l_ptr, r_ptr, perm_ptr, seg_ptr, wt_ptr, dw_ptr,
    T, k, n_experts, M, N,
    GATHER_L: tl.constexpr, SCALE_L: tl.constexpr, GATHER_R: tl.constexpr, PREC: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):  # fmt: skip
    """dW[e] = sum over expert e's rows of L[r]^T R[r] ([M, N]); L, R rows gathered from token rows
    when GATHER_*, L scaled by the routing weight when SCALE_L. Empty experts get zeros."""
    n_tm = tl.cdiv(M, BM)
    n_tn = tl.cdiv(N, BN)
    pid = tl.program_id(0)
    e = pid // (n_tm * n_tn)
    tm = (pid // n_tn) % n_tm
    tn = pid % n_tn
    lo = tl.load(seg_ptr + e) * T
    hi = tl.load(seg_ptr + e + 1) * T
    mm = tm * BM + tl.arange(0, BM)
    nn = tn * BN + tl.arange(0, BN)
    mmask = mm < M
    nmask = nn < N
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for r0 in range(lo, hi, BK):
        rows = r0 + tl.arange(0, BK)
        rmask = rows < hi
        trow, a = _token_rows(perm_ptr, rows, rmask, T, k)
        lrow = trow if GATHER_L else rows.to(tl.int64)
        rrow = trow if GATHER_R else rows.to(tl.int64)
        lt = tl.load(l_ptr + lrow[None, :] * M + mm[:, None], mask=mmask[:, None] & rmask[None, :], other=0.0)
        if SCALE_L:
            wt = tl.load(wt_ptr + a, mask=rmask, other=0.0).to(tl.float32)
            lt = (lt.to(tl.float32) * wt[None, :]).to(l_ptr.dtype.element_ty)
        rt = tl.load(r_ptr + rrow[:, None] * N + nn[None, :], mask=rmask[:, None] & nmask[None, :], other=0.0)
        acc = tl.dot(lt, rt, acc, input_precision=PREC)
    out = dw_ptr + e.to(tl.int64) * M * N + mm[:, None] * N + nn[None, :]
    tl.store(out, acc.to(dw_ptr.dtype.element_ty), mask=mmask[:, None] & nmask[None, :])


@triton.jit(do_not_specialize=["M"])
def cached_gate_up_kernel(
    x_ptr, w_ptr, ids_ptr, act_ptr, M, d, h, s_we, s_wn, s_wk,
    PREC: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):  # fmt: skip
    """act[j] = SwiGLU gate/up of expert ids[j] on all M rows; the id is read on the device."""
    j = tl.program_id(0)
    e = tl.load(ids_ptr + j).to(tl.int64)
    rows = tl.program_id(1) * BM + tl.arange(0, BM)
    rmask = rows < M
    cols = tl.program_id(2) * BN + tl.arange(0, BN)
    cmask = cols < h
    kk = tl.arange(0, BK)
    w_base = w_ptr + e * s_we + cols[None, :] * s_wn
    acc_g = tl.zeros((BM, BN), dtype=tl.float32)
    acc_u = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, d, BK):
        ks = k0 + kk
        km = ks < d
        xt = tl.load(x_ptr + rows[:, None] * d + ks[None, :], mask=rmask[:, None] & km[None, :], other=0.0)
        wmask = km[:, None] & cmask[None, :]
        wg = tl.load(w_base + ks[:, None] * s_wk, mask=wmask, other=0.0)
        wu = tl.load(w_base + h * s_wn + ks[:, None] * s_wk, mask=wmask, other=0.0)
        acc_g = tl.dot(xt, wg, acc_g, input_precision=PREC)
        acc_u = tl.dot(xt, wu, acc_u, input_precision=PREC)
    act = acc_g * tl.sigmoid(acc_g) * acc_u
    out = act_ptr + (j * M + rows).to(tl.int64)[:, None] * h + cols[None, :]
    tl.store(out, act.to(act_ptr.dtype.element_ty), mask=rmask[:, None] & cmask[None, :])


@triton.jit(do_not_specialize=["M", "n_choose"])
def cached_down_kernel(
    act_ptr, w_ptr, ids_ptr, wt_ptr, out_ptr, M, d, h, n_choose, s_we, s_wd, s_wh,
    PREC: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):  # fmt: skip
    """out = sum_j weights[j] * act[j] @ W2[ids[j]]^T, summed over j in order inside the program."""
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    rmask = rows < M
    cols = tl.program_id(1) * BN + tl.arange(0, BN)
    cmask = cols < d
    kk = tl.arange(0, BK)
    total = tl.zeros((BM, BN), dtype=tl.float32)
    for j in range(n_choose):
        e = tl.load(ids_ptr + j).to(tl.int64)
        w_base = w_ptr + e * s_we + cols[None, :] * s_wd
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        a_base = act_ptr + (j * M + rows).to(tl.int64)[:, None] * h
        for k0 in range(0, h, BK):
            ks = k0 + kk
            km = ks < h
            at = tl.load(a_base + ks[None, :], mask=rmask[:, None] & km[None, :], other=0.0)
            wt = tl.load(w_base + ks[:, None] * s_wh, mask=km[:, None] & cmask[None, :], other=0.0)
            acc = tl.dot(at, wt, acc, input_precision=PREC)
        total += tl.load(wt_ptr + j).to(tl.float32) * acc
    out = out_ptr + rows.to(tl.int64)[:, None] * d + cols[None, :]
    tl.store(out, total.to(out_ptr.dtype.element_ty), mask=rmask[:, None] & cmask[None, :])
