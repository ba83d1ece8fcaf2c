"""Training throughput and peak memory: MoDE vs the dense DiT (equal active params) vs the CNN U-Net.

    python benchmarks/train_throughput.py [--quick] [--save] [--device cpu|cuda] [--batch 256] [--threads 2]

Each policy is built from its default config (conf/policy/<name>.yaml) on Lift-shaped state data
and trained with AdamW on synthetic batches (forward + backward + step), in its own spawned process
so peak memory is per policy. Cases mode, dit, cnn (metrics samples_per_s, peak_mem_mb); ratio line
mode_vs_dit (metric throughput_ratio). On CPU, peak_mem_mb is the process's peak resident set minus
its resident set before the model was built; on CUDA it is torch's peak allocated memory.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time
from pathlib import Path

from common import LIFT_ACTION_DIM, LIFT_STATE, Recorder, lift_state_setup, median_seconds

POLICIES = ("mode", "dit", "cnn")


def _measure(name: str, batch_size: int, steps: int, repeats: int, device: str, threads: int, out) -> None:
    import torch
    import yaml

    from policies.base import Policy

    torch.set_num_threads(threads)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / f"conf/policy/{name}.yaml").read_text())
    cfg.pop("name")
    to, horizon = cfg["n_obs_steps"], cfg["horizon"]
    normalizer, shape_meta = lift_state_setup(1000)
    policy = Policy.build(name, cfg, shape_meta, normalizer).to(device).train()
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    batch = {
        "obs": {k: torch.randn(batch_size, to, d, device=device) for k, d in LIFT_STATE.items()},
        "action": torch.rand(batch_size, horizon, LIFT_ACTION_DIM, device=device) * 2 - 1,
        "action_is_pad": torch.zeros(batch_size, horizon, dtype=torch.bool, device=device),
        "task": torch.zeros(batch_size, dtype=torch.long, device=device), "goal": {},
    }
    sync = torch.cuda.synchronize if device == "cuda" else None

    def run() -> None:
        for _ in range(steps):
            loss, _ = policy.compute_loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = median_seconds(run, repeats=repeats, warmup=1, sync=sync)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before
    params = sum(p.numel() for p in policy.parameters())
    out.put({"samples_per_s": batch_size * steps / seconds, "peak_mem_mb": peak, "params_total": params})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats (seconds)")
    parser.add_argument("--save", action="store_true", help="write results/train_throughput-<device>.jsonl")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    steps, repeats = (2, 2) if args.quick else (5, 5)
    rec = Recorder("train_throughput", device=args.device, save=args.save)
    ctx = mp.get_context("spawn")
    results = {}
    for name in POLICIES:
        queue = ctx.Queue()
        proc = ctx.Process(target=_measure, args=(name, args.batch, steps, repeats, args.device, args.threads, queue))
        t0 = time.perf_counter()
        proc.start()
        results[name] = queue.get()
        proc.join()
        r = results[name]
        ctx_info = {"batch_size": args.batch, "threads": args.threads, "params_total": r["params_total"],
                    "wall_s": round(time.perf_counter() - t0, 1)}
        rec.emit(name, "samples_per_s", r["samples_per_s"], "samples/s", **ctx_info)
        rec.emit(name, "peak_mem_mb", r["peak_mem_mb"], "MB", **ctx_info)
    rec.ratio("mode_vs_dit", "throughput_ratio", results["mode"]["samples_per_s"] / results["dit"]["samples_per_s"])
    rec.ratio("mode_vs_cnn", "throughput_ratio", results["mode"]["samples_per_s"] / results["cnn"]["samples_per_s"])
    path = rec.write()
    if path:
        print(f"# saved {path}")


if __name__ == "__main__":
    main()
