"""Where MoDE's training step spends its time beside the dense DiT with its active params: a profile by op.

    python benchmarks/train_profile.py [--smoke] [--save] [--widths 128,256,512] [--batch 256] [--steps 5]

The cases of benchmarks/train_throughput.py (eager, forward + backward + AdamW step, one thread) run under
torch.profiler, MoDE and DiT in turn at each width. Each op's self CPU time is put in one category below
(the first pattern its name contains), per training step. Lines: case `<policy>-w<width>-<category>`
(ms_per_step; `share` of the step), `<policy>-w<width>-total`, and `mode_minus_dit-w<width>-<category>`
(ms_per_step, positive where MoDE spends more): the categories that add up to the gap between the two.
The profiler adds its own cost per op, so the totals run above the unprofiled step times of
train_throughput.py; what this measures is where the difference lies.
"""

from __future__ import annotations

import argparse
import os

from common import Recorder
from train_throughput import DEFAULT_WIDTHS, make_case

# (category, name fragments): an op goes to the first category one of whose fragments its name contains
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("moe_op", ("mode_kernels::",)),  # the custom op's own Python-side time (its children are counted below)
    ("gemm", ("aten::mm", "aten::addmm", "aten::bmm", "aten::_grouped_mm", "aten::baddbmm", "aten::linear")),
    ("attention", ("scaled_dot_product", "flash_attention")),
    ("routing", ("argsort", "aten::sort", "bincount", "topk", "multinomial", "softmax", "scatter", "gather",
                 "index_select", "aten::index", "cumsum")),
    ("norm", ("layer_norm", "rms_norm")),
    ("optimizer", ("_fused_adam", "Optimizer.", "_foreach", "addcdiv", "addcmul", "lerp", "aten::sqrt")),
    ("copy", ("aten::copy_", "aten::clone", "aten::contiguous", "aten::cat", "aten::stack", "aten::to",
              "aten::_to_copy", "aten::empty", "aten::zero", "aten::fill_", "aten::zeros")),
    ("activation", ("silu", "gelu", "sigmoid", "tanh")),
    ("elementwise", ("aten::add", "aten::mul", "aten::sub", "aten::div", "aten::neg", "aten::pow", "aten::exp",
                     "aten::where", "aten::sum", "aten::mean", "aten::clamp", "aten::abs")),
)


def category(op: str) -> str:
    for name, fragments in CATEGORIES:
        if any(f in op for f in fragments):
            return name
    return "other"


def profile(step, steps: int) -> dict[str, float]:
    """ms of self CPU time per training step in each category (and 'total'), over `steps` steps."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    out: dict[str, float] = {}
    for event in prof.key_averages():
        ms = event.self_cpu_time_total / 1000.0 / steps
        cat = category(event.key)
        out[cat] = out.get(cat, 0.0) + ms
    out["total"] = sum(out.values())
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, one step: checks the script runs")
    parser.add_argument("--save", action="store_true", help="write results/train_profile-<device>.jsonl")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--widths", default=DEFAULT_WIDTHS)
    parser.add_argument("--steps", type=int, default=5, help="profiled training steps per case")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    widths = [int(w) for w in args.widths.split(",")]
    if args.smoke:
        widths, args.steps, args.batch = [16], 1, 8
    rec = Recorder("train_profile", save=args.save and not args.smoke)
    for width in widths:
        profiles = {}
        for name in ("mode", "dit"):
            step, info = make_case(name, width, "eager", args.batch, "cpu")
            step()  # warm-up: first-call allocations and dispatch caches stay out of the profile
            profiles[name] = profile(step, args.steps)
            context = {"policy": name, "width": width, "batch_size": args.batch, "threads": args.threads,
                       "steps": args.steps, "loadavg_1m": round(os.getloadavg()[0], 2), **info}
            total = profiles[name]["total"]
            for cat, ms in sorted(profiles[name].items(), key=lambda kv: -kv[1]):
                extra = {} if cat == "total" else {"share": round(ms / total, 4)}
                rec.emit(f"{name}-w{width}-{cat}", "ms_per_step", ms, "ms", **context, **extra)
        cats = sorted(set(profiles["mode"]) | set(profiles["dit"]),
                      key=lambda c: -(profiles["mode"].get(c, 0.0) - profiles["dit"].get(c, 0.0)))
        for cat in cats:
            rec.emit(f"mode_minus_dit-w{width}-{cat}", "ms_per_step",
                     profiles["mode"].get(cat, 0.0) - profiles["dit"].get(cat, 0.0), "ms", width=width)
    path = rec.write()
    if path:
        print(f"# saved {path}")


if __name__ == "__main__":
    main()
