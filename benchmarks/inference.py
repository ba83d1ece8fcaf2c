"""Inference cost per action chunk: MoDE with and without expert caching, the dense DiT with MoDE's
active params, the CNN baseline, and (FLOPs only) a dense model with MoDE's total params.

  python benchmarks/inference.py [--quick] [--save] [--threads N] [--device cpu|cuda|all]

Prints JSON lines (DESIGN.md): per case `params_total`, `params_active`, `flops_per_chunk` (counted by
torch.utils.flop_counter.FlopCounterMode over one predict_action call) and the median `latency_ms` per
chunk at batch 1 and 32; the ratios `mode-cached_vs_mode-uncached-b*` and `mode-cached_vs_dit-b*`
(speedup, > 1: cached MoDE is faster) and `mode-cached_vs_dense-same-total` (flops_ratio). Cases are
timed in interleaved rounds so that load from other processes hits all of them alike.
--save writes benchmarks/results/inference-<device>.jsonl.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml
from common import Recorder, lift_state_setup
from torch.utils.flop_counter import FlopCounterMode

from policies.base import POLICY_REGISTRY, Policy
from policies.dit import dit_config_matching

CONF = Path(__file__).resolve().parent.parent / "conf" / "policy"
# Lift-like state observation (robosuite): 19 state dims, 7-d action, one task.


def policy_config(name: str) -> dict:
    cfg = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    cfg.pop("name")
    return cfg


def build_cases() -> tuple[dict[str, Policy], Policy, dict]:
    normalizer, shape_meta = lift_state_setup()
    torch.manual_seed(0)
    mode_cfg = policy_config("mode")
    cached = Policy.build("mode", mode_cfg, shape_meta, normalizer).eval()
    uncached = Policy.build("mode", mode_cfg, shape_meta, normalizer).eval()
    uncached.load_state_dict(cached.state_dict())
    uncached.net.expert_cache = False
    for p in (cached, uncached):  # trained-like output head, so that sampled actions depend on the experts
        torch.nn.init.normal_(p.net.head.weight, std=0.02, generator=torch.Generator().manual_seed(1))
    dit = Policy.build("dit", dit_config_matching(mode_cfg, "active"), shape_meta, normalizer).eval()
    cases = {"mode-cached": cached, "mode-uncached": uncached, "dit": dit}
    if "cnn" in POLICY_REGISTRY:
        cases["cnn"] = Policy.build("cnn", policy_config("cnn"), shape_meta, normalizer).eval()
    dense_total = Policy.build("dit", dit_config_matching(mode_cfg, "total"), shape_meta, normalizer).eval()
    return cases, dense_total, shape_meta


def inputs(shape_meta: dict, batch: int, n_obs_steps: int, device: str) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(batch)
    obs = {k: torch.randn(batch, n_obs_steps, m["shape"][0], generator=g).to(device)
           for k, m in shape_meta["obs"].items()}
    return obs, {"task": torch.zeros(batch, dtype=torch.long, device=device)}


def counts(policy: Policy) -> dict[str, int]:
    if hasattr(policy, "param_counts"):
        return policy.param_counts()
    total = sum(p.numel() for p in policy.parameters())
    return {"params_total": total, "params_active": total}


def _grouped_mm_flops(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """torch._grouped_mm (the CPU MoE path): each output element is a length-K dot product."""
    return 2 * int(np.prod(out_shape)) * a_shape[-1]


def flops_per_chunk(policy: Policy, obs: dict, goal: dict) -> int:
    # FlopCounterMode knows mm/bmm/conv/attention; teach it the grouped GEMM the MoE kernels may use.
    custom = {torch.ops.aten._grouped_mm: _grouped_mm_flops} if hasattr(torch.ops.aten, "_grouped_mm") else {}
    with FlopCounterMode(display=False, custom_mapping=custom) as counter:
        policy.predict_action(obs, goal)
    return counter.get_total_flops()


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int, sync: Callable[[], None]) -> dict:
    for fn in fns.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def run(device: str, quick: bool, save: bool, threads: int) -> None:
    rec = Recorder("inference", device=device, save=save)
    cases, dense_total, shape_meta = build_cases()
    mode = cases["mode-cached"]
    ctx = {"steps": mode.cfg.num_sampling_steps, "horizon": mode.cfg.horizon, "threads": threads,
           "width": mode.cfg.width, "n_layers": mode.cfg.n_layers, "num_experts": mode.cfg.num_experts,
           "top_k": mode.cfg.top_k, "quick": quick}

    # FLOPs are the model's, counted on the CPU path (FlopCounterMode cannot see inside Triton kernels).
    obs1, goal1 = inputs(shape_meta, 1, mode.cfg.n_obs_steps, "cpu")
    flops = {}
    for name, policy in [*cases.items(), ("dense-same-total", dense_total)]:
        c = counts(policy)
        flops[name] = flops_per_chunk(policy, obs1, goal1)
        for metric in ("params_total", "params_active"):
            rec.emit(name, metric, c[metric], "params", **ctx)
        rec.emit(name, "flops_per_chunk", flops[name], "flop", batch=1, **ctx)
    dense_ratio = flops["mode-cached"] / flops["dense-same-total"]
    rec.ratio("mode-cached_vs_dense-same-total", "flops_ratio", dense_ratio, **ctx)
    rec.ratio("mode-cached_vs_dit", "flops_ratio", flops["mode-cached"] / flops["dit"], **ctx)

    for p in cases.values():
        p.to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    obs1, goal1 = inputs(shape_meta, 1, mode.cfg.n_obs_steps, device)
    gen = torch.Generator(device=device)
    a, b = (cases[k].predict_action(obs1, goal1, generator=gen.manual_seed(0))
            for k in ("mode-cached", "mode-uncached"))
    if not torch.allclose(a, b, rtol=1e-4, atol=1e-4):  # never time wrong answers
        raise RuntimeError(f"cached and uncached MoDE disagree by {(a - b).abs().max().item()}")

    for batch, repeats in ((1, 7 if quick else 40), (32, 2 if quick else 10)):
        obs, goal = inputs(shape_meta, batch, mode.cfg.n_obs_steps, device)
        fns = {name: (lambda p=policy, o=obs, g=goal: p.predict_action(o, g))
               for name, policy in cases.items()}
        fns["mode-cached-plan-routes"] = lambda: mode.net.plan_routes(mode.edm.sigmas())
        ms = interleaved_medians(fns, repeats, sync)
        for name, value in ms.items():
            metric = "ms" if name.endswith("plan-routes") else "latency_ms"
            rec.emit(f"{name}-b{batch}", metric, value, "ms", batch=batch, repeats=repeats, **ctx)
        for other in ("mode-uncached", "dit"):
            speedup = ms[other] / ms["mode-cached"]
            rec.ratio(f"mode-cached_vs_{other}-b{batch}", "speedup", speedup, batch=batch, **ctx)
    path = rec.write()
    if path:
        print(f"# wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (seconds)")
    parser.add_argument("--save", action="store_true",
                        help="write benchmarks/results/inference-<device>.jsonl")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: a shared 2-core machine makes 2 threads erratic)")
    parser.add_argument("--device", default="all", choices=["cpu", "cuda", "all"],
                        help="all: the CPU, and CUDA when present")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = ["cpu"] if args.device == "cpu" else ["cuda"] if args.device == "cuda" else ["cpu"]
    if args.device == "all" and torch.cuda.is_available():
        devices.append("cuda")
    for device in devices:
        run(device, args.quick, args.save, args.threads)


if __name__ == "__main__":
    main()
