"""Public MoE ops. Each dispatches to a backend with the semantics of kernels/reference.py.

Backend choice: Triton on CUDA, the fastest PyTorch path elsewhere; the environment variable
KERNELS_BACKEND=triton|torch forces either (Triton on CPU tensors runs only under TRITON_INTERPRET=1,
set before triton is first imported). The Triton module is imported lazily for that reason.

The PyTorch path was chosen by benchmarks/kernels.py on the default CPU model (width 128, expert
hidden 256, 4 experts, top-2, 13 tokens, fp32; results in benchmarks/results/kernels-cpu.jsonl): the
per-expert loop and torch._grouped_mm are within noise of each other (the work is GEMM-bound), the
dense all-experts GEMM is 2-3x slower (E/k times the FLOPs). _grouped_mm wins the tie because it needs
no host sync; the loop covers what it cannot do (other dtypes, unaligned sizes, pre-Hopper GPUs).

Cached inference (cached_moe_mlp) has several exact variants (kernels/torch_moe.py HOST_VARIANTS on the
host; Triton or device-side gathering on CUDA). Which one runs is a per-(device, dtype, shape) choice
kept in a small table here: a fixed default until `autotune_cached` measures the variants on real
operands and records the fastest (KERNELS_CACHED_AUTOTUNE=1 does that on first use of each shape;
KERNELS_AUTOTUNE is the Triton kernels' own tile-tuning switch). Every variant matches
kernels/reference.py, so the choice changes speed, never results beyond rounding.
Under torch.compile the op is one opaque custom op (torch.library), so a compiled denoiser keeps the
in-place expert weights and the variant choice.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch

from kernels.reference import route_reference
from kernels.torch_moe import (
    DEFAULT_HOST_VARIANT,
    HOST_VARIANTS,
    cached_moe_mlp_torch,
    grouped_mm_supported,
    moe_mlp_grouped_mm,
    moe_mlp_loop,
)
from kernels.torch_moe_train import moe_mlp_train

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
    """Per-sample routed SwiGLU experts: x [B, T, d], ids/weights [B, k] -> [B, T, d].

    Training (gradients wanted) and torch.compile take the custom op of kernels/torch_moe_train.py (hand-
    written backward, traceable); eager CUDA training keeps the Triton kernels' own autograd Function."""
    _check_shapes(x, w13, w2, ids, weights, n_lead=2)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x, w13, w2, weights))
    compiling = torch.compiler.is_compiling()
    if backend_for(x) == "triton" and not compiling:
        from kernels.triton_moe import moe_mlp_triton

        return moe_mlp_triton(*_compute_dtype(x, w13, w2), ids, weights)
    # torch._grouped_mm on CUDA wants Hopper or newer.
    if needs_grad or compiling:
        return moe_mlp_train(x, w13, w2, ids, weights)
    hopper = not x.is_cuda or torch.cuda.get_device_capability(x.device) >= (9, 0)
    if grouped_mm_supported(x, w13) and hopper:
        return moe_mlp_grouped_mm(x, w13, w2, ids, weights)
    return moe_mlp_loop(x, w13, w2, ids, weights)


# --- cached inference: one routing for all rows, and which variant runs it ------------------
_CACHED_CHOICE: dict[tuple, str] = {}  # cached_key(...) -> variant name; filled by autotune_cached
CUDA_VARIANTS = ("triton", "gathered")


def cached_key(x: torch.Tensor, w13: torch.Tensor, k: int) -> tuple:
    """(device type, dtype, M, d, h, E, k): what the speed of the cached variants depends on."""
    return (x.device.type, str(x.dtype).removeprefix("torch."), int(x.shape[0]), int(x.shape[1]),
            int(w13.shape[1]) // 2, int(w13.shape[0]), int(k))


def cached_variants(x: torch.Tensor) -> tuple[str, ...]:
    """The variants that can run on x's device."""
    return CUDA_VARIANTS if x.is_cuda else tuple(HOST_VARIANTS)


def cached_choice(x: torch.Tensor, w13: torch.Tensor, k: int) -> str:
    """The variant cached_moe_mlp runs for these operands: the recorded one, else the fixed default."""
    recorded = _CACHED_CHOICE.get(cached_key(x, w13, k))
    if recorded is not None:
        return recorded
    return ("triton" if backend_for(x) == "triton" else "gathered") if x.is_cuda else DEFAULT_HOST_VARIANT


def record_cached_choice(key: tuple, variant: str) -> None:
    """Pin the variant for one cached_key (what autotune_cached does with its winner)."""
    allowed = CUDA_VARIANTS if key[0] == "cuda" else tuple(HOST_VARIANTS)
    if variant not in allowed:
        raise ValueError(f"unknown cached MoE variant {variant!r} for {key[0]}; choose one of {allowed}")
    _CACHED_CHOICE[key] = variant


def cached_choices() -> dict[tuple, str]:
    """A copy of the recorded choices."""
    return dict(_CACHED_CHOICE)


def clear_cached_choices() -> None:
    _CACHED_CHOICE.clear()


def _run_cached(variant: str, x, w13, w2, ids, weights) -> torch.Tensor:
    if variant == "triton":
        from kernels.triton_moe import cached_moe_mlp_triton

        return cached_moe_mlp_triton(*_compute_dtype(x, w13, w2), ids, weights)
    if variant == "gathered":
        return cached_moe_mlp_torch(x, w13, w2, ids, weights)
    return cached_moe_mlp_torch(x, w13, w2, ids, weights, variant=variant)


def _median_seconds(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


@torch.no_grad()
def autotune_cached(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, ids: torch.Tensor,
                    weights: torch.Tensor, repeats: int = 7,
                    measure: Callable[[str, Callable[[], object]], float] | None = None) -> dict[str, float]:
    """Time every cached variant on these operands and record the fastest for their cached_key.

    The variants take turns in `repeats` rounds (so that load from other processes hits all alike) after
    one warm-up call each; the median wins. `measure(name, fn) -> seconds` replaces the wall-clock timer
    (tests use it to make the choice deterministic). Returns the median seconds per variant."""
    _check_shapes(x, w13, w2, ids, weights, n_lead=1)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    names = [v for v in cached_variants(x) if v != "triton" or x.is_cuda]
    fns = {v: (lambda v=v: _run_cached(v, x, w13, w2, ids, weights)) for v in names}
    timer = measure or (lambda name, fn: _median_seconds(fn, sync))
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {v: [] for v in fns}
    for _ in range(max(1, repeats)):
        for v, fn in fns.items():
            times[v].append(timer(v, fn))
    medians = {v: statistics.median(t) for v, t in times.items()}
    record_cached_choice(cached_key(x, w13, ids.shape[0]), min(medians, key=medians.get))
    return medians


def _autotune_on_first_use() -> bool:
    return os.environ.get("KERNELS_CACHED_AUTOTUNE", "0").strip() == "1"


def _cached_eager(x, w13, w2, ids, weights) -> torch.Tensor:
    backend = backend_for(x)  # validates KERNELS_BACKEND; a forced backend overrides the table
    forced = bool(os.environ.get("KERNELS_BACKEND", "").strip())
    if forced and (backend == "triton" or x.is_cuda):
        return _run_cached("triton" if backend == "triton" else "gathered", x, w13, w2, ids, weights)
    if _autotune_on_first_use() and cached_key(x, w13, ids.shape[0]) not in _CACHED_CHOICE:
        autotune_cached(x, w13, w2, ids, weights)
    variant = cached_choice(x, w13, ids.shape[0])
    if variant == "triton" and not x.is_cuda:  # a CUDA choice recorded for a host key cannot happen
        variant = DEFAULT_HOST_VARIANT
    return _run_cached(variant, x, w13, w2, ids, weights)


@torch.library.custom_op("mode_kernels::cached_moe_mlp", mutates_args=())
def _cached_moe_mlp_op(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, ids: torch.Tensor,
                       weights: torch.Tensor) -> torch.Tensor:
    return _cached_eager(x, w13, w2, ids, weights)


@_cached_moe_mlp_op.register_fake
def _(x, w13, w2, ids, weights):
    dt = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
    return x.new_empty(x.shape, dtype=dt)


def cached_moe_mlp(
    x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """One routing for all rows (expert caching at inference): x [M, d], ids/weights [k] -> [M, d].
    On CUDA reads ids and weights on the device: no host sync, capturable in a CUDA graph."""
    _check_shapes(x, w13, w2, ids, weights, n_lead=1)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x, w13, w2, weights))
    if needs_grad:  # the Triton kernel has no backward; the torch path keeps every gradient
        return cached_moe_mlp_torch(x, w13, w2, ids, weights)
    if torch.compiler.is_compiling():  # opaque to the compiler: keeps the weights in place
        return _cached_moe_mlp_op(x, w13, w2, ids, weights)
    return _cached_eager(x, w13, w2, ids, weights)


def route(
    logits: torch.Tensor, k: int, training: bool = False, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Softmax router with top-k (sampled while training); see kernels/reference.py. A [B, E] softmax
    and top-k are a few tiny launches, so every device uses the PyTorch twin."""
    return route_reference(logits, k, training, generator)
