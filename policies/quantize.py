"""Reduced-precision inference for the transformer policies: `quantize_policy(policy, "bf16" | "int8")`.

What changes: the linear layers of every transformer block (attention qkv and output projection) and
its MLP (MoDE's experts, the DiT's dense SwiGLU, the shared expert, the DTR MLP). What stays fp32: the
residual stream, norms, attention scores, the noise embedding and the router (so that routing decisions
do not move), the action in/out layers (tiny) and the observation / goal encoders (once per chunk),
and the sampler's state.

  bf16  weights stored in bf16; each GEMM runs in bf16 on inputs cast to bf16 and returns fp32
  int8  weights int8 with one symmetric scale per output channel; activations quantized dynamically
        at each GEMM, int32 accumulation, rescaled to fp32. On the CPU: fbgemm's prepacked dynamic
        linear (quantized::linear_dynamic, one activation scale per GEMM; 7-bit activations on CPUs
        without VNNI, where 8 bits overflow fbgemm's int16 sums); on CUDA, or where fbgemm is
        missing or the weight is sliced (DTR windows): torch._int_mm with one activation scale per row

Why int8 is weight-and-activation and not weight-only: on the CPU measured here (AVX512-VNNI/BF16;
benchmarks/inference.py prints the GEMM rates) torch's weight-only kernel (_weight_int8pack_mm) runs
10-25x slower than fp32 with fp32 activations and slower than plain bf16 with bf16 ones, while fbgemm's
prepacked int8 GEMM is 3-10x faster than fp32 at batch 1 (and _int_mm, which repacks its weight each
call, 1.5-4x). Either activation scaling keeps the error ~1% per GEMM (measured against fp32 in the
benchmark and bounded in tests/policies/test_inference_paths.py). fbgemm's packing goes through
quantized-tensor constructors that torch 2.13 marks deprecated; when they go, _int_mm takes over.
Under torch.compile the int8 GEMMs run eagerly between compiled regions (fbgemm's packed weights are
not traceable).

The returned policy is a copy (the original keeps its fp32 weights; the copy holds only the quantized
ones). Quantize after loading a checkpoint: its state_dict does not load into an fp32 policy.
"""

from __future__ import annotations

import copy
import functools
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from policies.base import Policy
from policies.mode import Attention, SparseMoE, SwiGLU
from policies.routing_dtr import DTRMLP

PRECISIONS = ("fp32", "bf16", "int8")


# --- int8 arithmetic -------------------------------------------------------------------------
def int8_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w [..., N, K] -> (int8 [..., N, K], fp32 scale [..., N]): symmetric, one scale per output row."""
    scale = w.detach().float().abs().amax(dim=-1).clamp_min(1e-12) / 127.0
    return torch.round(w.detach().float() / scale[..., None]).to(torch.int8), scale


def _quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = x.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / 127.0
    return torch.round(x / scale).to(torch.int8), scale


def _int_mm(xq: torch.Tensor, wq: torch.Tensor) -> torch.Tensor:
    """xq [M, K] @ wq[N, K]^T in int32. CUDA's kernel wants M > 16 and K, N multiples of 8: pad M with
    zero rows (which change no other row), and fall back to an exact int32 matmul otherwise."""
    if not xq.is_cuda:
        return torch._int_mm(xq, wq.t())
    m, k = xq.shape
    if k % 8 or wq.shape[0] % 8:
        return (xq.double() @ wq.double().t()).round().to(torch.int32)  # exact in float64
    if m <= 16:
        return torch._int_mm(F.pad(xq, (0, 0, 0, 17 - m)), wq.t())[:m]
    return torch._int_mm(xq, wq.t())


def int8_matmul(x: torch.Tensor, wq: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x [..., K] (float) times int8 weight [N, K] with scales [N] -> [..., N] in x's dtype (_int_mm)."""
    x2 = x.reshape(-1, x.shape[-1]).float()
    xq, sx = _quantize_rows(x2)
    y = _int_mm(xq, wq).float() * sx * scale
    return y.view(*x.shape[:-1], wq.shape[0]).to(x.dtype)


def fbgemm_available() -> bool:
    return torch.backends.quantized.engine in ("x86", "fbgemm")


def fbgemm_pack(wq: torch.Tensor, scale: torch.Tensor):
    """int8 [N, K] + scales [N] -> fbgemm's packed weight for quantized::linear_dynamic (CPU)."""
    with warnings.catch_warnings():  # torch 2.13 marks the quantized-tensor constructors deprecated
        warnings.simplefilter("ignore")
        qt = torch._make_per_channel_quantized_tensor(wq.cpu(), scale.cpu().double(),
                                                      torch.zeros(len(scale), dtype=torch.long), 0)
        return torch.ops.quantized.linear_prepack(qt, None)


@functools.cache
def fbgemm_reduce_range() -> bool:
    """Whether fbgemm must quantize activations to 7 bits. Without VNNI its int8 GEMM multiplies u8 x s8
    pairs into saturating int16 sums (vpmaddubsw), which full-range activations overflow: on an AVX2-only
    EPYC that gave 13-29% error per GEMM instead of 1-2% with 7 bits. VNNI sums in int32 and keeps 8 bits.
    Unknown (no /proc/cpuinfo): 7 bits, the safe choice."""
    try:
        return "avx512_vnni" not in Path("/proc/cpuinfo").read_text()
    except OSError:
        return True


def fbgemm_matmul(x: torch.Tensor, packed) -> torch.Tensor:
    x2 = x.reshape(-1, x.shape[-1]).float().contiguous()
    y = torch.ops.quantized.linear_dynamic(x2, packed, fbgemm_reduce_range())
    return y.view(*x.shape[:-1], y.shape[-1]).to(x.dtype)


class _Weight(nn.Module):
    """One [N, K] weight in bf16, or int8 + per-row scale; `matmul(x)` = x @ W^T returning x's dtype."""

    def __init__(self, w: torch.Tensor, fmt: str) -> None:
        super().__init__()
        self.fmt = fmt
        if fmt == "bf16":
            self.register_buffer("w", w.detach().to(torch.bfloat16).clone())
        else:
            q, s = int8_weight(w)
            self.register_buffer("w", q)
            self.register_buffer("scale", s)
        self._packed = None  # fbgemm's packed copy of the int8 weight, made on first CPU use

    def matmul(self, x: torch.Tensor, rows: slice | None = None, cols: slice | None = None) -> torch.Tensor:
        w = self.w if rows is None else self.w[rows]
        w = w if cols is None else w[:, cols]
        if self.fmt == "bf16":
            return F.linear(x.to(torch.bfloat16), w).to(x.dtype)
        return self._int8(x, w, rows, cols)

    @torch.compiler.disable
    def _int8(self, x: torch.Tensor, w: torch.Tensor, rows: slice | None, cols: slice | None) -> torch.Tensor:
        if rows is None and cols is None and not x.is_cuda and fbgemm_available():
            if self._packed is None:
                self._packed = fbgemm_pack(self.w, self.scale)
            return fbgemm_matmul(x, self._packed)
        scale = self.scale if rows is None else self.scale[rows]
        return int8_matmul(x, w.contiguous() if cols is not None else w, scale)


class LowPrecisionLinear(nn.Module):
    """nn.Linear with its weight in bf16 or int8; bias kept in fp32."""

    def __init__(self, linear: nn.Linear, fmt: str) -> None:
        super().__init__()
        self.weight = _Weight(linear.weight, fmt)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.weight.matmul(x)
        return y if self.bias is None else y + self.bias


class LowPrecisionSwiGLU(nn.Module):
    """SwiGLU (dense, shared expert) or DTR MLP in the experts' layout, w13 [2H, d], w2 [d, H]."""

    def __init__(self, mlp: SwiGLU | DTRMLP, fmt: str) -> None:
        super().__init__()
        self.hidden = mlp.w2.shape[1]
        self.dtr = isinstance(mlp, DTRMLP)
        self.w13, self.w2 = _Weight(mlp.w13, fmt), _Weight(mlp.w2, fmt)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None, route=None) -> torch.Tensor:
        h = self.hidden
        if self.dtr and isinstance(route, tuple):  # cached DTR: only the window's units
            start, stop = route
            gate = self.w13.matmul(x, rows=slice(start, stop))
            up = self.w13.matmul(x, rows=slice(h + start, h + stop))
            return self.w2.matmul(F.silu(gate) * up, cols=slice(start, stop))
        if self.dtr and route is None:
            raise ValueError("a DTR MLP needs its window: a mask [B, hidden] or a (start, stop) pair")
        gate, up = self.w13.matmul(x).chunk(2, dim=-1)
        hidden = F.silu(gate) * up
        if self.dtr:
            hidden = hidden * route[:, None, :].to(hidden.dtype)
        return self.w2.matmul(hidden)


def int8_experts(x: torch.Tensor, q13: torch.Tensor, s13: torch.Tensor, q2: torch.Tensor, s2: torch.Tensor,
                 experts: list[int], weights: list[float]) -> torch.Tensor:
    """sum_j w_j SwiGLU_{e_j}(x) with int8 experts via _int_mm: x [M, d] quantized once for all k."""
    h = q13.shape[1] // 2
    xq, sx = _quantize_rows(x.float())
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    for e, wj in zip(experts, weights):
        gate_up = _int_mm(xq, q13[e]).float() * sx * s13[e]
        aq, sa = _quantize_rows(F.silu(gate_up[:, :h]) * gate_up[:, h:])
        out += _int_mm(aq, q2[e]).float() * (sa * s2[e] * wj)
    return out


class LowPrecisionMoE(SparseMoE):
    """SparseMoE with its experts in bf16 or int8 and its router (and routing) unchanged in fp32."""

    def __init__(self, moe: SparseMoE, fmt: str) -> None:
        nn.Module.__init__(self)  # not SparseMoE's: it would allocate fresh fp32 experts
        self.fmt, self.top_k, self.stats = fmt, moe.top_k, {}
        self.router = copy.deepcopy(moe.router)
        self.shared = None if moe.shared is None else LowPrecisionSwiGLU(moe.shared, fmt)
        if fmt == "bf16":
            self.register_buffer("w13", moe.w13.detach().to(torch.bfloat16).clone())
            self.register_buffer("w2", moe.w2.detach().to(torch.bfloat16).clone())
        else:
            q13, s13 = int8_weight(moe.w13)
            q2, s2 = int8_weight(moe.w2)
            for name, t in (("w13", q13), ("s13", s13), ("w2", q2), ("s2", s2)):
                self.register_buffer(name, t)
        self._packed: list | None = None  # per expert (gate-up, down) fbgemm weights, made on first CPU use

    def forward(self, x: torch.Tensor, emb: torch.Tensor, route=None) -> torch.Tensor:
        import kernels

        if self.fmt == "bf16":
            xb = x.to(torch.bfloat16)
            if route is None:
                ids, weights = self.route(emb)
                out = kernels.moe_mlp(xb, self.w13, self.w2, ids, weights.to(torch.bfloat16))
            else:
                out = kernels.cached_moe_mlp(xb.reshape(-1, x.shape[-1]), self.w13, self.w2, *route).view_as(x)
            out = out.to(x.dtype)
        elif route is None:
            out = self._int8_routed(x, *self.route(emb))
        else:
            ids, weights = route
            flat = x.reshape(-1, x.shape[-1])
            out = self._int8_experts(flat, ids.tolist(), weights.float().tolist()).view_as(x).to(x.dtype)
        return out if self.shared is None else out + self.shared(x)

    @torch.compiler.disable
    def _int8_experts(self, x: torch.Tensor, experts: list[int], weights: list[float]) -> torch.Tensor:
        """x [M, d] through the listed experts, weighted and summed (fp32)."""
        if x.is_cuda or not fbgemm_available():
            return int8_experts(x, self.w13, self.s13, self.w2, self.s2, experts, weights)
        if self._packed is None:
            self._packed = [(fbgemm_pack(self.w13[e], self.s13[e]), fbgemm_pack(self.w2[e], self.s2[e]))
                            for e in range(self.w13.shape[0])]
        h, out = self.w13.shape[1] // 2, None
        for e, wj in zip(experts, weights):
            gate_up = fbgemm_matmul(x.float(), self._packed[e][0])
            y = fbgemm_matmul(F.silu(gate_up[:, :h]) * gate_up[:, h:], self._packed[e][1]) * wj
            out = y if out is None else out + y
        return out

    @torch.compiler.disable
    def _int8_routed(self, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Per-sample routing (uncached sampling): each expert over the samples routed to it."""
        out = torch.zeros_like(x)
        for e in torch.unique(ids).tolist():
            rows, slot = (ids == e).nonzero(as_tuple=True)
            y = self._int8_experts(x[rows].reshape(-1, x.shape[-1]), [e], [1.0])
            out.index_add_(0, rows, y.view(len(rows), *x.shape[1:]).to(x.dtype) * weights[rows, slot, None, None])
        return out


def _low_precision(module: nn.Module, fmt: str) -> nn.Module | None:
    if isinstance(module, SparseMoE):
        return LowPrecisionMoE(module, fmt)
    if isinstance(module, (SwiGLU, DTRMLP)):
        return LowPrecisionSwiGLU(module, fmt)
    return None


def quantize_policy(policy: Policy, dtype: str = "int8") -> Policy:
    """A copy of a transformer policy (mode, dit) whose blocks run in `dtype` ("bf16" | "int8"); "fp32"
    returns the policy itself. The input policy is not modified."""
    if dtype not in PRECISIONS:
        raise ValueError(f"unknown precision {dtype!r}; choose one of {', '.join(PRECISIONS)}")
    if dtype == "fp32":
        return policy
    blocks = getattr(getattr(policy, "net", None), "blocks", None)
    if blocks is None:
        raise ValueError(f"precision={dtype} applies to the transformer policies (mode, dit); the "
                         f"{policy.name!r} policy runs in fp32 only")
    targets = {}  # name in policy.net -> low-precision replacement, built from the original weights
    for i, block in enumerate(blocks):
        attn: Attention = block.attn
        targets[f"blocks.{i}.attn.qkv"] = LowPrecisionLinear(attn.qkv, dtype)
        targets[f"blocks.{i}.attn.proj"] = LowPrecisionLinear(attn.proj, dtype)
        mlp = _low_precision(block.mlp, dtype)
        if mlp is not None:
            targets[f"blocks.{i}.mlp"] = mlp
    # Copy everything else; the replaced modules' fp32 weights are not copied at all (memo -> empty).
    replaced = [policy.net.get_submodule(n) for n in targets]
    memo = {id(p): nn.Parameter(torch.empty(0), requires_grad=False)
            for m in replaced for p in m.parameters() if not _in_router(m, p)}
    new = copy.deepcopy(policy, memo)
    for name, module in targets.items():
        parent, _, leaf = name.rpartition(".")
        setattr(new.net.get_submodule(parent), leaf, module.to(next(policy.net.parameters()).device))
    new.precision = dtype
    return new.eval()


def _in_router(module: nn.Module, param: nn.Parameter) -> bool:
    """The router stays fp32 and is deep-copied by LowPrecisionMoE: keep its params out of the memo."""
    router = getattr(module, "router", None)
    return router is not None and any(param is p for p in router.parameters())
