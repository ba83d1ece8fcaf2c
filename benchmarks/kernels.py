"""Speed of the MoE expert MLP paths, one JSON object per line (format: docs/architecture.md).

Training (forward + backward for x, w13, w2, routing weights): Triton (CUDA only) vs the per-expert
loop vs torch._grouped_mm vs the dense all-experts GEMM (all through autograd) vs train_op, the custom op
with a hand-written backward (kernels/torch_moe_train.py). Cached inference (one routing for M rows):
Triton vs the per-expert loop (the reference twin) vs the gathered-weights einsum. On CUDA also the
error of bf16 Triton against the fp32 reference. `--quick` runs one small shape of each in seconds.

    python benchmarks/kernels.py [--quick] [--out results.jsonl]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels import route  # noqa: E402
from kernels.reference import cached_moe_mlp_reference  # noqa: E402
from kernels.torch_moe import (  # noqa: E402
    cached_moe_mlp_torch,
    grouped_mm_supported,
    moe_mlp_dense,
    moe_mlp_grouped_mm,
    moe_mlp_loop,
)

BENCH = "kernels"


class Emitter:
    def __init__(self, out: str | None, common: dict):
        self.file = open(out, "a") if out else None  # noqa: SIM115
        self.common = common

    def __call__(self, case: str, metric: str, value: float, unit: str = "", **ctx) -> None:
        line = {"bench": BENCH, "case": case, "metric": metric, "value": round(value, 5), "unit": unit}
        line.update(self.common)
        line.update(ctx)
        text = json.dumps(line)
        print(text, flush=True)
        if self.file:
            self.file.write(text + "\n")
            self.file.flush()


def time_methods(fns: dict, device: torch.device, iters: int, reps: int) -> dict[str, float]:
    """Median over reps of the mean time (ms) of `iters` back-to-back calls of each fn, after a
    warm-up. The methods take turns within each rep so that load from other processes hits all alike."""
    fns = dict(fns)
    for name, fn in list(fns.items()):
        try:
            fn()
            fn()
        except Exception:  # one broken path must not cost the other measurements of a short GPU lease
            print(f"[kernels bench] {name} failed, skipped:\n{traceback.format_exc()}", file=sys.stderr)
            del fns[name]
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(iters):
                fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - t0) * 1e3 / iters)
    return {name: statistics.median(v) for name, v in times.items()}


def make_problem(b, t, d, h, n_exp, k, dtype, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, d, generator=gen)
    w13 = torch.randn(n_exp, 2 * h, d, generator=gen) / d**0.5
    w2 = torch.randn(n_exp, d, h, generator=gen) / h**0.5
    ids, weights, _ = route(torch.randn(b, n_exp, generator=gen), k)
    gy = torch.randn(b, t, d, generator=gen)
    cast = [v.to(device, dtype) for v in (x, w13, w2, gy)]
    return cast[0], cast[1], cast[2], ids.to(device), weights.to(device), cast[3]


def train_step(fn, x, w13, w2, ids, weights, gy):
    leaves = [v.detach().requires_grad_() for v in (x, w13, w2, weights)]

    def step():
        out = fn(leaves[0], leaves[1], leaves[2], ids, leaves[3])
        return (out, *torch.autograd.grad(out, leaves, gy))

    return step


def train_methods(device, x, w13) -> dict:
    from kernels.torch_moe_train import moe_mlp_train

    # train_op: the custom op with the hand-written backward that training runs off CUDA (and under compile)
    methods = {"loop": moe_mlp_loop, "dense": moe_mlp_dense, "train_op": moe_mlp_train}
    hopper = device.type != "cuda" or torch.cuda.get_device_capability() >= (9, 0)
    if grouped_mm_supported(x, w13) and hopper:
        methods["grouped_mm"] = moe_mlp_grouped_mm
    if device.type == "cuda":
        from kernels.triton_moe import moe_mlp_triton

        methods["triton"] = moe_mlp_triton
    return methods


def bench_train(emit, device, dtype, shapes, iters, reps) -> None:
    for b, t, d, h, n_exp, k in shapes:
        x, w13, w2, ids, weights, gy = make_problem(b, t, d, h, n_exp, k, dtype, device)
        ctx = dict(B=b, T=t, d=d, h=h, E=n_exp, k=k, dtype=str(dtype).removeprefix("torch."))
        flops = 3 * 2 * (b * k * t) * (d * 2 * h + h * d)  # useful work: forward + 2x for backward
        steps = {
            name: train_step(fn, x, w13, w2, ids, weights, gy)
            for name, fn in train_methods(device, x, w13).items()
        }
        ms = time_methods(steps, device, iters, reps)
        for name in ms:
            emit(f"{name}-train-B{b}", "ms", ms[name], "ms", **ctx)
            emit(f"{name}-train-B{b}", "tflops", flops / ms[name] / 1e9, "TFLOP/s", **ctx)
        best = "triton" if "triton" in ms else min(ms, key=ms.get)
        for other in ms:
            if other != best:
                emit(f"{best}_vs_{other}-train-B{b}", "speedup", ms[other] / ms[best], "x", **ctx)


def bench_cached(emit, device, dtype, shapes, iters, reps) -> None:
    methods = {"loop": cached_moe_mlp_reference, "torch": cached_moe_mlp_torch}
    if device.type == "cuda":
        from kernels.triton_moe import cached_moe_mlp_triton

        methods["triton"] = cached_moe_mlp_triton
    for m, d, h, n_exp, k in shapes:
        x, w13, w2, _, _, _ = make_problem(1, m, d, h, n_exp, k, dtype, device)
        ids = torch.arange(k, device=device) * 2 % n_exp
        weights = torch.full((k,), 1.0 / k, device=device)
        ctx = dict(M=m, d=d, h=h, E=n_exp, k=k, dtype=str(dtype).removeprefix("torch."))
        calls = {name: partial(fn, x[0], w13, w2, ids, weights) for name, fn in methods.items()}
        with torch.no_grad():
            ms = time_methods(calls, device, iters, reps)
        for name in ms:
            emit(f"{name}-cached-M{m}", "latency_ms", ms[name], "ms", **ctx)
        best = "triton" if "triton" in ms else min(ms, key=ms.get)
        for other in ms:
            if other != best:
                emit(f"{best}_vs_{other}-cached-M{m}", "speedup", ms[other] / ms[best], "x", **ctx)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want.float()).norm() / want.float().norm().clamp_min(1e-30)).item()


def bench_accuracy(emit, device, shapes) -> None:
    """bf16 Triton vs the fp32 reference fed the same (bf16-rounded) values."""
    from kernels.triton_moe import cached_moe_mlp_triton, moe_mlp_triton

    for b, t, d, h, n_exp, k in shapes:
        x, w13, w2, ids, weights, gy = make_problem(b, t, d, h, n_exp, k, torch.bfloat16, device)
        got = train_step(moe_mlp_triton, x, w13, w2, ids, weights, gy)()
        up = [v.float() for v in (x, w13, w2)]
        want = train_step(moe_mlp_loop, up[0], up[1], up[2], ids, weights, gy.float())()
        ctx = dict(B=b, T=t, d=d, h=h, E=n_exp, k=k, dtype="bfloat16", baseline="float32 reference")
        for name, g, w in zip(["out", "dx", "dw13", "dw2", "dweights"], got, want):
            emit(f"triton-bf16_vs_fp32-train-B{b}-{name}", "rel_err", rel_err(g, w), "", **ctx)
        with torch.no_grad():
            c_got = cached_moe_mlp_triton(x[0], w13, w2, ids[0], weights[0])
            c_want = cached_moe_mlp_reference(up[0][0], up[1], up[2], ids[0], weights[0])
        emit(f"triton-bf16_vs_fp32-cached-M{t}", "rel_err", rel_err(c_got, c_want), "", **ctx)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one small shape per section, in seconds")
    parser.add_argument("--out", default=None, help="also append the JSON lines to this file")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    common = {"device": "cpu", "torch": torch.__version__.split("+")[0]}
    if device.type == "cuda":
        import triton

        common.update(device=torch.cuda.get_device_name(device), triton=triton.__version__)
        torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 reference is true fp32
    else:
        common["threads"] = torch.get_num_threads()
    emit = Emitter(args.out, common)
    if device.type == "cuda":
        # Expert hidden 4d; B 64-256, T 10-16, d 256-1024, E 4-8, top-2; inference M 10-64.
        dtype, iters, reps = torch.bfloat16, 10, 5
        if args.quick:
            train = [(128, 16, 512, 2048, 8, 2)]
            cached = [(16, 512, 2048, 8, 2)]
        else:
            train = [(b, 16, d, 4 * d, 8, 2) for d in (256, 512, 1024) for b in (64, 128, 256)]
            train += [(128, 10, d, 4 * d, 8, 2) for d in (256, 512, 1024)]
            train += [(128, 16, d, 4 * d, 4, 2) for d in (256, 512, 1024)]
            cached = [(m, d, 4 * d, 8, 2) for d in (256, 512, 1024) for m in (10, 16, 32, 64)]
        try:
            acc_shapes = [(128, 16, 512, 2048, 8, 2)] + ([] if args.quick else [(64, 10, 1024, 4096, 8, 2)])
            bench_accuracy(emit, device, acc_shapes)
        except Exception:
            print(f"[kernels bench] accuracy failed:\n{traceback.format_exc()}", file=sys.stderr)
    else:
        # The default CPU model (conf/policy/mode.yaml): width 128, expert hidden 256, 4 experts, top-2,
        # ~13 tokens per sample; and twice as wide.
        dtype, iters, reps = torch.float32, 1, 3 if args.quick else 9
        if args.quick:
            train, cached = [(64, 13, 128, 256, 4, 2)], [(13, 128, 256, 4, 2)]
        else:
            train = [(b, 13, d, 2 * d, 4, 2) for d in (128, 256) for b in (32, 64, 256)]
            cached = [(m, d, 2 * d, 4, 2) for d in (128, 256) for m in (13, 64)]
    bench_cached(emit, device, dtype, cached, max(iters, 20), reps)
    bench_train(emit, device, dtype, train, iters, reps)
    if device.type == "cuda":
        from kernels.triton_moe import best_configs

        print(f"[kernels bench] autotuned tiles: {json.dumps(best_configs(), indent=1)}", file=sys.stderr)


if __name__ == "__main__":
    main()
