"""Inference cost per action chunk (10 DDIM steps, Lift-shaped state input) at three model sizes:
MoDE with expert caching (eager, compiled, bf16, int8), without caching, the dense DiT with MoDE's
active params, the CNN (default size), and the original MoDE transformer with its own expert cache
(`--peer-mode-src DIR`, a local copy of the authors' code; never downloaded).

  python -m benchmarks.inference [--quick] [--save] [--threads N] [--device cpu|cuda|all]
      [--sizes default,small,paper] [--batches 1,32] [--peer-mode-src DIR]
  python -m benchmarks.inference --markdown   # the README table from benchmarks/results/inference-cpu.jsonl

Sizes: default = the CPU preset (width 128, 4 layers, 4 experts of hidden 256, top-2); small = width 256,
4 layers, 4 experts of hidden 1024 (4 x width, the original's), router hidden 512; paper =
conf/policy/mode_paper.yaml (width 1024, 12 layers; batch 1 only on the CPU unless --batches says).
Per case and batch (JSON lines, docs/architecture.md): `latency_ms` (median of interleaved rounds, so that load
from other processes hits every case alike), `flops_per_chunk` (FlopCounterMode), `gemm_fraction` (the
chunk's FLOP rate over a plain (B*tokens x d)@(d x 2h) GEMM's in the same precision, timed in the same
rounds: the compute limit), `mem_bw_fraction` (block weight bytes read per chunk / latency over a large
copy's bandwidth: the memory limit), `first_call_s` (compile, pack), `mem_growth_mb`, `cache_mb`,
`action_err_max`/`action_err_mean` (reduced precision vs fp32, same noise), and ratios
`<a>_vs_<b>` (speedup > 1: a is faster). Results worth keeping: --save (benchmarks/results/).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from benchmarks.common import Recorder
from benchmarks.inference_cases import (
    Case,
    autotune_experts,
    available_mb,
    build_policies,
    count_flops,
    first_call,
    inputs,
    policy_cases,
    size_config,
)
from benchmarks.inference_table import markdown_table
from benchmarks.peer_mode import build_peer, peer_cache_mb, peer_cases
from policies.quantize import fbgemm_available, fbgemm_matmul, fbgemm_pack, int8_weight, quantize_policy

RATIOS = [("mode-cached", "mode-uncached"), ("mode-cached", "dit"), ("mode-cached", "peer-cached"),
          ("mode-cached", "peer-uncached"), ("mode-bf16", "peer-cached"), ("mode-int8", "peer-cached"),
          ("mode-bf16", "mode-cached"), ("mode-int8", "mode-cached"), ("mode-compiled-step", "mode-cached"),
          ("mode-compiled-loop", "mode-cached"), ("mode-compiled-step", "peer-cached"),
          ("mode-compiled-loop", "peer-cached"), ("mode-compiled-step", "dit"), ("mode-compiled-loop", "dit"),
          ("mode-bf16-compiled-step", "peer-cached"),
          ("mode-bf16-compiled-step", "mode-cached"), ("mode-compiled-graph", "mode-cached"),
          ("peer-cached", "peer-uncached")]


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int, sync: Callable[[], None]) -> dict:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def gemm_fns(m: int, d: int, n: int, device: str) -> dict[str, Callable[[], object]]:
    """The reference GEMM (M x d)@(d x n) per precision: fp32 and bf16 F.linear, int8 as our int8 path."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(m, d, generator=g).to(device), (torch.randn(n, d, generator=g) * 0.02).to(device)
    xb, wb = x.bfloat16(), w.bfloat16()
    fns = {"fp32": lambda: F.linear(x, w), "bf16": lambda: F.linear(xb, wb)}
    if device == "cpu" and fbgemm_available():
        packed = fbgemm_pack(*int8_weight(w))
        fns["int8"] = lambda: fbgemm_matmul(x, packed)
    return fns


def copy_bandwidth_gbs(device: str, sync: Callable[[], None], mb: int = 512) -> float:
    src = torch.ones(mb * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    times = []
    for _ in range(5):
        sync()
        t0 = time.perf_counter()
        dst.copy_(src)
        sync()
        times.append(time.perf_counter() - t0)
    return 2 * src.numel() * 4 / statistics.median(times) / 1e9  # read + write


def _check_against(reference: torch.Tensor, case: Case, gen: torch.Generator) -> None:
    got = case.run(gen.manual_seed(0))
    if not torch.allclose(got, reference, rtol=1e-4, atol=1e-4):  # never time wrong answers
        raise RuntimeError(f"{case.name} disagrees with mode-cached by {(got - reference).abs().max().item()}")


def _ratios(rec: Recorder, ms: dict, group: dict, batch: int, ctx: dict, only_group: int | None = None) -> None:
    """speedup a vs b = t_b / t_a; across the two groups chained through mode-cached, timed in both.
    only_group: emit just the ratios that involve a case of that group."""
    anchor = {1: ms.get("mode-cached"), 2: ms.get("mode-cached@2")}
    for a, b in RATIOS:
        if a not in ms or b not in ms or (only_group and only_group not in (group[a], group[b])):
            continue
        if group[a] == group[b]:
            rec.ratio(f"{a}_vs_{b}-b{batch}", "speedup", ms[b] / ms[a], **ctx)
        else:
            value = (ms[b] / anchor[group[b]]) * (anchor[group[a]] / ms[a])
            rec.ratio(f"{a}_vs_{b}-b{batch}", "speedup", value, chained_via="mode-cached", **ctx)


class Timing:
    """Times groups of cases at one size and batch and reports them."""

    def __init__(self, args, rec: Recorder, cfg, ctx: dict, device: str, bandwidth: float) -> None:
        self.args, self.rec, self.cfg, self.ctx, self.device, self.bandwidth = args, rec, cfg, ctx, device, bandwidth
        self.sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def repeats(self, batch: int) -> int:
        slow = batch > 1 or self.ctx["size"] == "paper"
        if self.args.smoke:
            return 1
        return (3 if self.args.quick else 7) if slow else (7 if self.args.quick else 30)

    def group(self, cases: list[Case], batch: int, anchor: Case | None = None, group: str = "") -> dict[str, float]:
        """One interleaved group (+ the reference GEMMs); reports every case; returns ms per case."""
        cfg, ctx = self.cfg, {**self.ctx, "batch": batch, **({"group": group} if group else {})}
        m = batch * ctx["n_tokens"]
        gemms = {f"gemm-{k}": fn for k, fn in gemm_fns(m, cfg.width, 2 * cfg.expert_hidden, self.device).items()}
        for fn in gemms.values():
            fn()
        fns = {c.name: c.run for c in cases} | gemms
        if anchor is not None:
            fns = {f"{anchor.name}@2": anchor.run} | fns
        ms = interleaved_medians(fns, self.repeats(batch), self.sync)
        rate = {k.removeprefix("gemm-"): 2 * m * cfg.width * 2 * cfg.expert_hidden / (ms[k] / 1e3) for k in gemms}
        for k, r in rate.items():
            self.rec.emit(f"gemm-{k}-{m}x{cfg.width}x{2 * cfg.expert_hidden}", "tflops", r / 1e12, "TFLOP/s", **ctx)
        flops: dict[str, int] = {}
        for case in cases:
            flops[case.name] = flops[case.flops_of] if case.flops_of in flops else count_flops(case.run)
            _report(self.rec, case, ms[case.name], flops[case.name], rate, self.bandwidth, ctx, cfg.num_sampling_steps)
        if "mode-cached" in flops and "dit" in flops:
            self.rec.ratio(f"mode-cached_vs_dit-b{batch}", "flops_ratio", flops["mode-cached"] / flops["dit"], **ctx)
        return ms


def _emit_params(rec: Recorder, policies: dict, ctx: dict) -> None:
    for name, p in policies.items():
        counts = p.param_counts() if hasattr(p, "param_counts") else \
            {"params_total": sum(q.numel() for q in p.parameters())}
        for metric, value in counts.items():
            rec.emit(name, metric, value, "params", **ctx)


def peer_first(args, size, mode, shape_meta, batches, timing, rec, ctx, device) -> dict[int, dict[str, float]]:
    """The original's groups (mode-cached as the anchor) before our other models exist: at the paper's
    size its 11 GB cache fits only beside MoDE alone. Returns ms per case per batch."""
    peer = build_peer(args, size, mode, device, rec, ctx)
    out: dict[int, dict[str, float]] = {}
    for batch in batches if peer is not None else []:
        obs, goal = inputs(shape_meta, batch, mode.cfg.n_obs_steps, device)
        anchor = Case("mode-cached", lambda generator=None, o=obs, g=goal: mode.predict_action(
            o, g, generator=generator))
        peers = peer_cases(peer, batch, device, rec, {**ctx, "batch": batch})
        out[batch] = {k: v for k, v in timing.group(peers, batch, anchor=anchor, group="peer").items()
                      if k in ("mode-cached@2", "peer-cached", "peer-uncached")}
    del peer
    gc.collect()
    return out


def measure(args, size: str, device: str, rec: Recorder) -> None:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    policies, shape_meta = build_policies(size, device, names=("mode",))
    mode = policies["mode"]
    cfg = mode.cfg
    ctx = {"size": size, "steps": cfg.num_sampling_steps, "width": cfg.width, "n_layers": cfg.n_layers,
           "num_experts": cfg.num_experts, "top_k": cfg.top_k, "expert_hidden": cfg.expert_hidden,
           "n_tokens": mode.net.pos.shape[1], "threads": args.threads, "quick": args.quick}
    bandwidth = copy_bandwidth_gbs(device, sync)
    rec.emit("copy", "gb_per_s", bandwidth, "GB/s", **ctx)
    timing = Timing(args, rec, cfg, ctx, device, bandwidth)
    batches = args.batches or ([1] if size == "paper" and device == "cpu" else [1, 32])
    # The original's cache is built once per size: beside all our models where memory allows, else first
    # (beside MoDE alone) in groups of its own, with mode-cached timed in both to chain the ratios.
    together = bool(args.peer_mode_src) and not args.peer_apart and peer_cache_mb(mode) * 2 < available_mb(device)
    apart = peer_first(args, size, mode, shape_meta, batches, timing, rec, ctx, device) \
        if args.peer_mode_src and not together else {}
    policies |= build_policies(size, device, names=("dit", "cnn"))[0]
    _emit_params(rec, policies, ctx)
    policies |= {f"mode-{dtype}": quantize_policy(mode, dtype) for dtype in ("bf16", "int8")}
    compile_cases = [] if args.quick else (["step"] if size == "paper" else ["step", "loop"])
    if device.startswith("cuda") and not args.quick:
        compile_cases.append("graph")
    peer = build_peer(args, size, mode, device, rec, ctx) if together else None
    gen = torch.Generator(device=device)
    for batch in batches:
        bctx = {**ctx, "batch": batch}
        obs, goal = inputs(shape_meta, batch, cfg.n_obs_steps, device)
        cases = policy_cases(policies, obs, goal, compile_cases)
        for case in cases:  # the fastest expert variant for each policy's shape, recorded before timing
            if case.name in ("mode-cached", "mode-bf16"):
                for variant, t in autotune_experts(case.policy, batch).items():
                    rec.emit(f"{case.name}-expert-{variant}-b{batch}", "ms", t, "ms", **bctx)
        reference = mode.predict_action(obs, goal, generator=gen.manual_seed(0))
        for case in cases:
            first_call(case, device, sync)
            if case.name.startswith(("mode-cached", "mode-uncached", "mode-compiled")):
                _check_against(reference, case, gen)
        _precision_errors(rec, reference, cases, gen, bctx)
        peers = peer_cases(peer, batch, device, rec, bctx) if peer is not None else []
        ms = timing.group(cases + peers, batch)
        _ratios(rec, ms, dict.fromkeys(ms, 1), batch, bctx)
        if batch in apart:
            group = dict.fromkeys(ms, 1) | dict.fromkeys(apart[batch], 2)
            _ratios(rec, ms | apart[batch], group, batch, bctx, only_group=2)
        del cases, peers
        gc.collect()


def _report(rec: Recorder, case: Case, ms: float, flops: int, gemm_rate: dict, bandwidth: float, ctx: dict,
            steps: int) -> None:
    rec.emit(f"{case.name}-b{ctx['batch']}", "latency_ms", ms, "ms", **ctx)
    rec.emit(f"{case.name}-b{ctx['batch']}", "flops_per_chunk", flops, "flop", **ctx)
    rate = gemm_rate.get(case.gemm, gemm_rate["fp32"])
    rec.emit(f"{case.name}-b{ctx['batch']}", "gemm_fraction", flops / (ms / 1e3) / rate, "",
             gemm=case.gemm, **ctx)
    if case.weight_bytes:
        per_s = case.weight_bytes * steps / (ms / 1e3) / 1e9
        rec.emit(f"{case.name}-b{ctx['batch']}", "mem_bw_fraction", per_s / bandwidth, "",
                 weight_mb_per_chunk=round(case.weight_bytes * steps / 2**20, 1), **ctx)
    for metric, value in case.extra.items():
        rec.emit(f"{case.name}-b{ctx['batch']}", metric, value, "s" if metric.endswith("_s") else "MB", **ctx)
    if case.name == "mode-cached":  # the routing table is the whole cache: S x L x k ids and weights
        table = case.policy.net.plan_routes(case.policy.edm.sigmas())
        rec.emit(f"{case.name}-b{ctx['batch']}", "cache_mb",
                 (table.ids.numel() * table.ids.element_size() + table.weights.numel() * 4) / 2**20, "MB", **ctx)


def _precision_errors(rec: Recorder, reference: torch.Tensor, cases: list[Case], gen: torch.Generator,
                      ctx: dict) -> None:
    """Reduced precision vs fp32 on the same noise: max and mean abs action error over the batch."""
    for case in cases:
        if case.name in ("mode-bf16", "mode-int8"):
            err = (case.run(gen.manual_seed(0)) - reference).abs()
            rec.emit(f"{case.name}-b{ctx['batch']}", "action_err_max", err.max().item(), "env", **ctx)
            rec.emit(f"{case.name}-b{ctx['batch']}", "action_err_mean", err.mean().item(), "env", **ctx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="default size, fewer repeats, no compile (seconds)")
    parser.add_argument("--smoke", action="store_true", help="--quick at batch 1, one repeat: checks the script runs")
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/inference-<device>.jsonl")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: a shared 2-core machine makes 2 threads erratic)")
    parser.add_argument("--device", default="all", choices=["cpu", "cuda", "all"],
                        help="all: the CPU, and CUDA when present")
    parser.add_argument("--sizes", default=None, help="comma list of default, small, paper (all three; "
                        "--quick: default)")
    parser.add_argument("--batches", default=None, help="comma list of batch sizes (default 1,32; paper on "
                        "the CPU: 1)")
    parser.add_argument("--peer-mode-src", default=None,
                        help="a local copy of the original MoDE code (its modedit.py is imported from there)")
    parser.add_argument("--peer-apart", action="store_true",
                        help="time the original in groups of its own even where its cache fits beside ours")
    parser.add_argument("--markdown", action="store_true", help="print the README table from saved results")
    args = parser.parse_args()
    if args.markdown:
        print(markdown_table())
        return
    if args.smoke:
        args.quick, args.save, args.batches = True, False, args.batches or "1"
    torch.set_num_threads(args.threads)
    # Dynamo keeps one cache per code object: every size, precision and batch here is another entry of
    # DiffusionTransformer.body's, more than the default limit of 8 (past it, the compiled cases would
    # silently run eagerly).
    torch._dynamo.config.recompile_limit = 64
    sizes = (args.sizes or ("default" if args.quick else "default,small,paper")).split(",")
    for s in sizes:
        size_config(s)  # unknown names fail before anything runs
    args.batches = [int(b) for b in args.batches.split(",")] if args.batches else None
    args.peer = {}  # size -> the original's model with its cache, kept across that size's batches
    devices = ["cpu"] if args.device == "cpu" else ["cuda"] if args.device == "cuda" else ["cpu"]
    if args.device == "all" and torch.cuda.is_available():
        devices.append("cuda")
    for device in devices:
        rec = Recorder("inference", device=device, save=args.save)
        for size in sizes:
            measure(args, size, device, rec)
        path = rec.write()
        if path:
            print(f"# wrote {path}")


if __name__ == "__main__":
    main()
