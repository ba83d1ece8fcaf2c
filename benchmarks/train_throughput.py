"""Training throughput: MoDE vs the dense DiT with MoDE's active params, eager and compiled, at several widths.

    python benchmarks/train_throughput.py [--quick | --smoke] [--save] [--device cpu|cuda] [--batch 256]
        [--threads 1] [--widths 128,256,512] [--policies mode,dit] [--modes eager,compile] [--rounds 5]
    python benchmarks/train_throughput.py --chart [--device cpu]   # docs/img/training-speed-<device>.png

Every case is built in this one process (width w: MoDE with expert hidden 2w, its default at w=128; the DiT
from `dit_config_matching`, so its params equal MoDE's active ones; the CNN U-Net with down_dims
[w/2, w, 2w]) on Lift-shaped state batches and trained with AdamW (forward + backward + step). The cases
take turns, `--steps` steps each, for `--rounds` rounds, so load from other processes hits them alike;
each case's samples/s is the median over rounds. Modes: eager, compile (torch.compile of compute_loss, as
`trainer.compile=true` does), graphs (CUDA only: compile with mode=reduce-overhead, i.e. CUDA graphs).

Lines: case `<policy>-w<width>-<mode>` (samples_per_s; compile_s, the first compiled step, for compiled
modes; peak_mem_mb on CUDA), ratios `mode_vs_dit-w<width>-<mode>` (throughput_ratio) and
`<mode>_vs_eager-<policy>-w<width>` (speedup). `--chart` draws the saved lines (results/) as the chart of
docs/training-speed.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from common import LIFT_ACTION_DIM, LIFT_STATE, RESULTS_DIR, Recorder, device_name, lift_state_setup

DEFAULT_WIDTHS = "128,256,512"
MODES = ("eager", "compile", "graphs")


def policy_config(name: str, width: int) -> dict:
    """The config of one case: MoDE's defaults at `width` (expert hidden 2 * width), the matched DiT, or a CNN."""
    from policies.dit import dit_config_matching

    mode_cfg = {"width": width, "expert_hidden": 2 * width, "n_heads": 4}
    if name == "mode":
        return mode_cfg
    if name == "dit":
        return dit_config_matching(mode_cfg, "active")
    if name == "cnn":
        return {"down_dims": [max(8, width // 2), width, 2 * width]}
    raise ValueError(f"unknown policy {name!r}; choose mode, dit or cnn")


def make_case(name: str, width: int, mode: str, batch_size: int, device: str) -> tuple[Callable[[], None], dict]:
    """A closure running one training step of a fresh policy, and the case's context."""
    import torch

    from policies.base import Policy, compile_loss
    from training.module import adamw

    torch.manual_seed(0)
    normalizer, shape_meta = lift_state_setup(1000)
    policy = Policy.build(name, policy_config(name, width), shape_meta, normalizer).to(device).train()
    opt = adamw(policy.parameters(), lr=1e-4)  # the trainer's optimizer
    to, horizon = policy.config["n_obs_steps"], policy.config["horizon"]
    batch = {
        "obs": {k: torch.randn(batch_size, to, d, device=device) for k, d in LIFT_STATE.items()},
        "action": torch.rand(batch_size, horizon, LIFT_ACTION_DIM, device=device) * 2 - 1,
        "action_is_pad": torch.zeros(batch_size, horizon, dtype=torch.bool, device=device),
        "task": torch.zeros(batch_size, dtype=torch.long, device=device), "goal": {},
    }
    loss_fn = policy.compute_loss if mode == "eager" else compile_loss(policy, graphs=mode == "graphs")

    def step() -> None:
        loss, _ = loss_fn(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    total = sum(p.numel() for p in policy.parameters())
    counts = policy.param_counts() if hasattr(policy, "param_counts") else {}
    info = {"params_total": total, "params_active": counts.get("params_active", total)}
    return step, info


def chart(device: str) -> Path:
    """Samples/s per width and mode, MoDE beside the DiT, from the saved results; returns the PNG's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [json.loads(s) for s in (RESULTS_DIR / f"train_throughput-{device_name(device)}.jsonl").open()]
    rates = {(r["policy"], r["width"], r["mode"]): r["value"] for r in lines if r["metric"] == "samples_per_s"}
    ratios = {(r["width"], r["mode"]): r["value"] for r in lines if r["case"].startswith("mode_vs_dit")}
    widths = sorted({w for _, w, _ in rates})
    modes = [m for m in MODES if any(k[2] == m for k in rates)]
    fig, axes = plt.subplots(1, len(widths), figsize=(3.6 * len(widths), 3.4))
    for ax, width in zip(np.atleast_1d(axes), widths):
        for i, mode in enumerate(modes):
            for j, (name, color) in enumerate((("mode", "tab:blue"), ("dit", "tab:gray"))):
                value = rates.get((name, width, mode))
                if value is not None:
                    ax.bar(i + 0.4 * j - 0.2, value, 0.4, color=color, label=name if i == 0 else None)
            if (width, mode) in ratios:
                top = max(rates.get((n, width, mode), 0) for n in ("mode", "dit"))
                ax.text(i, top * 1.02, f"{ratios[width, mode]:.2f}x", ha="center", fontsize=9)
        ax.set_xticks(range(len(modes)), modes)
        ax.set_title(f"width {width}")
        ax.set_ylabel("training samples/s")
        ax.margins(y=0.15)
    np.atleast_1d(axes)[0].legend(title="MoDE/DiT above the bars", fontsize=8, title_fontsize=8, loc="lower left")
    host = lines[0]
    fig.suptitle(f"{host['device']} ({host.get('threads', '?')} thread), batch {host.get('batch_size', '?')}, "
                 f"torch {host['torch']}", fontsize=10)
    fig.tight_layout()
    out = Path(__file__).resolve().parents[1] / "docs" / "img" / f"training-speed-{device_name(device)}.png"
    fig.savefig(out, dpi=110)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="default width only, 2 rounds of 2 steps")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny shapes, one step, eager unless --modes: checks the script runs")
    parser.add_argument("--save", action="store_true", help="write results/train_throughput-<device>.jsonl")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on the CPU")
    parser.add_argument("--widths", default=DEFAULT_WIDTHS)
    parser.add_argument("--policies", default="mode,dit")
    parser.add_argument("--modes", default=None, help=f"comma list of {', '.join(MODES)} "
                        "(default: eager,compile; plus graphs on CUDA)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--chart", action="store_true", help="draw the saved results as docs/img/training-speed-*.png")
    parser.add_argument("--steps", type=int, default=3, help="training steps per case per round")
    args = parser.parse_args(argv)
    if args.chart:
        print(f"# wrote {chart(args.device)}")
        return
    import torch

    torch.set_num_threads(args.threads)
    default_modes = "eager" if args.smoke else "eager,compile,graphs" if args.device == "cuda" else "eager,compile"
    modes = (args.modes or default_modes).split(",")
    if bad := [m for m in modes if m not in MODES]:
        parser.error(f"unknown modes {bad}; choose from {', '.join(MODES)}")
    if "graphs" in modes and args.device != "cuda":
        parser.error("--modes graphs captures CUDA graphs: use it with --device cuda")
    widths = [int(w) for w in args.widths.split(",")]
    if args.quick:
        widths, args.rounds, args.steps = widths[:1], 2, 2
    if args.smoke:
        widths, args.rounds, args.steps, args.batch = [16], 1, 1, 8
    names = args.policies.split(",")

    rec = Recorder("train_throughput", device=args.device, save=args.save and not args.smoke)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    cases, context, times = {}, {}, {}
    for width in widths:
        for name in names:
            for mode in modes:
                key = f"{name}-w{width}-{mode}"
                step, info = make_case(name, width, mode, args.batch, args.device)
                sync()
                t0 = time.perf_counter()
                step()  # warm-up; for compiled modes the first compile
                sync()
                first = time.perf_counter() - t0
                step()
                cases[key], times[key] = step, []
                context[key] = {"policy": name, "width": width, "mode": mode, "batch_size": args.batch,
                                "threads": args.threads, "steps": args.steps, "rounds": args.rounds, **info}
                if mode != "eager":
                    rec.emit(key, "compile_s", first, "s", **context[key])
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.rounds):
        for key, step in cases.items():
            sync()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            sync()
            times[key].append(time.perf_counter() - t0)
    rate = {key: args.batch * args.steps / statistics.median(t) for key, t in times.items()}
    load = {"loadavg_1m": round(os.getloadavg()[0], 2)}  # other processes' load while the rounds ran
    for key in cases:
        rec.emit(key, "samples_per_s", rate[key], "samples/s", **context[key], **load)
    for width in widths:
        for mode in modes:
            if "mode" in names and "dit" in names:
                rec.ratio(f"mode_vs_dit-w{width}-{mode}", "throughput_ratio",
                          rate[f"mode-w{width}-{mode}"] / rate[f"dit-w{width}-{mode}"], width=width, mode=mode)
            for name in names:
                if mode != "eager" and "eager" in modes:
                    rec.ratio(f"{mode}_vs_eager-{name}-w{width}", "speedup",
                              rate[f"{name}-w{width}-{mode}"] / rate[f"{name}-w{width}-eager"], width=width)
    path = rec.write()
    if path:
        print(f"# saved {path}")


if __name__ == "__main__":
    main()
