"""What reduced precision costs a trained policy: rollout success and action error per precision.

  python -m benchmarks.precision_success CHECKPOINT [--precisions fp32,bf16,int8] [--episodes 50]
      [--workers 2] [--out DIR] [--save] [eval.yaml overrides ...]

For each precision the checkpoint is evaluated by rollouts (eval_rollouts.evaluate, the same seeds for
every precision; training/evaluate.py) with the policy from policies.quantize.quantize_policy. The fp32 run records the
observations of its first --record policy calls; every other precision then predicts on those same
observations with the same sampling noise, giving the action error against fp32 (max and mean abs, env
units) and the latency per chunk. JSON lines (bench precision_success): success_rate (with its 95%
Wilson interval), action_err_max, action_err_mean, latency_ms per precision. Results go to --out
(default: a temporary directory), never into the checkpoint's run directory.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import Recorder
from policies.base import Policy
from policies.quantize import PRECISIONS, quantize_policy
from training import evaluate as ev
from training.checkpoint import resolve_checkpoint


def _recording(policy: Policy, store: list, limit: int) -> Policy:
    """Wrap predict_action to keep copies of the first `limit` (obs, goal) batches it sees."""
    inner = policy.predict_action

    def predict_action(obs, goal, generator=None):  # `generator` named: the runner then gives each episode its own
        if len(store) < limit:
            store.append(({k: v.clone() for k, v in obs.items()}, {k: v.clone() for k, v in goal.items()}))
        return inner(obs, goal, generator=generator)

    policy.predict_action = predict_action
    return policy


def evaluate_at(precision: str, args, overrides: list[str], out: Path, recorded: list) -> dict:
    """One rollout evaluation with the policy in `precision`."""
    cfg = ev.load_config([f"checkpoint={args.checkpoint}", f"n_episodes={args.episodes}",
                                     f"workers={args.workers}", "video.n=0", "logger=none",
                                     f"out={out / precision}", *overrides])
    build = ev._build_policy  # the policy the evaluation builds, swapped for the one in `precision`

    def build_at_precision(ckpt, path, device):
        policy = build(ckpt, path, device)
        if "precision" not in cfg:  # (once evaluate takes the option, it quantizes itself)
            policy = quantize_policy(policy, precision)
        return _recording(policy, recorded, args.record) if precision == "fp32" else policy

    if "precision" in cfg:
        cfg.precision = precision
    ev._build_policy = build_at_precision
    try:
        return ev.evaluate(cfg)
    finally:
        ev._build_policy = build


@torch.no_grad()
def action_errors(fp32: Policy, other: Policy, recorded: list, device: str) -> tuple[float, float, float]:
    """(max abs, mean abs, median ms per chunk) of `other` against fp32 on the recorded observations."""
    errs, times = [], []
    for i, (obs, goal) in enumerate(recorded):
        obs = {k: v.to(device) for k, v in obs.items()}
        goal = {k: v.to(device) for k, v in goal.items()}
        ref = fp32.predict_action(obs, goal, generator=torch.Generator(device=device).manual_seed(i))
        t0 = time.perf_counter()
        got = other.predict_action(obs, goal, generator=torch.Generator(device=device).manual_seed(i))
        times.append(time.perf_counter() - t0)
        errs.append((got - ref).abs())
    flat = torch.cat([e.flatten() for e in errs])
    return flat.max().item(), flat.mean().item(), statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a training checkpoint (.ckpt) or run directory")
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--record", type=int, default=32, help="policy calls of the fp32 run kept for errors")
    parser.add_argument("--out", default=None, help="results directory (default: a temporary one)")
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/precision_success-<device>.jsonl")
    args, overrides = parser.parse_known_args()
    precisions = args.precisions.split(",")
    for p in precisions:
        if p not in PRECISIONS:
            raise SystemExit(f"unknown precision {p!r}; choose from {', '.join(PRECISIONS)}")
    if "fp32" not in precisions:
        precisions.insert(0, "fp32")  # the reference for the action error
    out = Path(args.out or tempfile.mkdtemp(prefix="precision_success_"))
    recorded: list = []
    ckpt = resolve_checkpoint(args.checkpoint)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rec = Recorder("precision_success", device=device, save=args.save)
    fp32 = Policy.from_checkpoint(ckpt, map_location=device).to(device).eval()
    ctx = {"checkpoint": str(ckpt), "policy": fp32.name, "episodes": args.episodes}
    for precision in ["fp32"] + [p for p in precisions if p != "fp32"]:
        agg = evaluate_at(precision, args, overrides, out, recorded)["aggregate"]
        lo, hi = agg["success_ci95"]
        rec.emit(precision, "success_rate", agg["success_rate"], "", ci95_low=lo, ci95_high=hi,
                 n_success=agg["n_success"], n_errors=agg.get("n_errors", 0), **ctx)
        if recorded:
            err_max, err_mean, ms = action_errors(fp32, quantize_policy(fp32, precision), recorded, device)
            rec.emit(precision, "action_err_max", err_max, "env", chunks=len(recorded), **ctx)
            rec.emit(precision, "action_err_mean", err_mean, "env", chunks=len(recorded), **ctx)
            rec.emit(precision, "latency_ms", ms, "ms", chunks=len(recorded), **ctx)
    rec.finish(out)


if __name__ == "__main__":
    main()
