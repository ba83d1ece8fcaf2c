"""How selective a trained MoDE's noise router is over its sampling schedule (issue #13: why MoDE trails
the dense DiT at the CPU budget).

    python benchmarks/router_usage.py NAME=CHECKPOINT [NAME=CHECKPOINT ...] [--save]

For every σ of the checkpoint's own sampling schedule, each layer's router gives a softmax over the E
experts (the router sees σ alone, so this is the whole routing of the policy). Per case and layer, JSON
lines (bench router_usage):
  entropy_ratio   mean over σ of the router's entropy / log E (1 = uniform: the experts are interchangeable)
  top1_weight     mean over σ of the larger renormalized weight of the chosen k (1/k = an even mix)
  distinct_sets   how many different expert sets the top-k picks over the schedule (1 = one fixed pair)
and the case's mean over layers as layer "all". Training with sampled routes (policy.sample_routes=true,
the paper's) from a near-uniform router draws a random pair for each sample, so the experts see every
noise level alike; these numbers show whether they came to differ by σ.
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

import torch

from benchmarks.common import Recorder
from policies.base import CheckpointError, Policy
from training.checkpoint import resolve_checkpoint


def router_probs(policy: Policy) -> torch.Tensor:
    """[layers, steps, E]: each layer's router softmax at every σ > 0 of the policy's sampling schedule."""
    if not policy.net.sparse_layers():
        raise ValueError("not a MoDE policy with a learned router (no sparse layers)")
    return policy.net.router_logits(policy.edm.sigmas()).float().softmax(dim=-1)


def usage(probs: torch.Tensor, k: int) -> list[dict[str, float]]:
    """The metrics of one layer's [steps, E] router probabilities each, in layer order."""
    out = []
    n_experts = probs.shape[-1]
    for p in probs:
        entropy = -(p * p.clamp_min(1e-12).log()).sum(dim=-1) / math.log(n_experts)
        chosen = p.topk(k, dim=-1)
        weights = chosen.values / chosen.values.sum(dim=-1, keepdim=True)
        sets = {tuple(sorted(ids.tolist())) for ids in chosen.indices}
        out.append({"entropy_ratio": entropy.mean().item(), "top1_weight": weights[:, 0].mean().item(),
                    "distinct_sets": float(len(sets))})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="+", metavar="NAME=CHECKPOINT")
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/router_usage-cpu.jsonl")
    args = parser.parse_args(argv)
    rec = Recorder("router_usage", save=args.save)
    torch.set_grad_enabled(False)
    for case in args.cases:
        name, sep, spec = case.partition("=")
        if not sep or not name or not spec:
            parser.error(f"expected NAME=CHECKPOINT, got {case!r}")
        try:
            policy = Policy.from_checkpoint(resolve_checkpoint(spec)).eval()
            layers = usage(router_probs(policy), int(policy.config["top_k"]))
        except (CheckpointError, ValueError) as err:
            parser.exit(2, f"error: {name}: {err}\n")
        context = {"checkpoint": str(Path(spec)), "sample_routes": policy.config.get("sample_routes", True)}
        for i, metrics in enumerate(layers):
            for metric, value in metrics.items():
                rec.emit(name, metric, value, layer=i, **context)
        for metric in layers[0]:
            rec.emit(name, metric, statistics.fmean(m[metric] for m in layers), layer="all", **context)
    rec.write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
