"""What a trained policy costs at inference (params, FLOPs per chunk, b=1 latency) and what its codebook
logged while training: the columns next to success in a suite's table.

FLOPs are counted by torch.utils.flop_counter over one predict_action call at batch 1, on the CPU path
as benchmarks/inference.py counts them (that script imports `common` as a file, so its helpers cannot be
imported from this package; the counting is repeated here in a few lines). Latency is
benchmarks/common.py's median over `repeats` chunks after a warm-up, on the given device, with whatever
torch thread count the process has (recorded next to the number).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import device_name, median_seconds


def dummy_inputs(shape_meta: dict[str, Any], n_obs_steps: int, batch: int = 1,
                 device: str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Observations in env units (state float32, cameras uint8) and a task-index goal, as rollouts pass them."""
    g = torch.Generator().manual_seed(0)
    obs = {}
    for key, meta in shape_meta["obs"].items():
        shape = (batch, n_obs_steps, *meta["shape"])
        if meta["type"] == "rgb":
            obs[key] = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8).to(device)
        else:
            obs[key] = torch.randn(shape, generator=g).to(device)
    return obs, {"task": torch.zeros(batch, dtype=torch.int64, device=device)}


def _grouped_mm_flops(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    # torch._grouped_mm (a MoE path on CPU) is unknown to FlopCounterMode: a length-K dot per output element
    return 2 * int(torch.Size(out_shape).numel()) * a_shape[-1]


def count_flops(policy: torch.nn.Module, obs: dict, goal: dict) -> int:
    custom = {torch.ops.aten._grouped_mm: _grouped_mm_flops} if hasattr(torch.ops.aten, "_grouped_mm") else {}
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=custom) as counter:
        policy.predict_action(obs, goal)
    return int(counter.get_total_flops())


def param_counts(policy: torch.nn.Module) -> dict[str, int]:
    """params_total and params_active (what one chunk uses: MoDE's k of E experts; all for dense policies)."""
    if hasattr(policy, "param_counts"):
        return {k: int(v) for k, v in policy.param_counts().items() if k in ("params_total", "params_active")}
    total = sum(p.numel() for p in policy.parameters())
    return {"params_total": total, "params_active": total}


def policy_cost(ckpt_path: str | Path, device: str = "cpu", repeats: int = 20) -> dict[str, Any]:
    """params_total / params_active, flops_per_chunk (b=1), latency_b1_ms (median) of a checkpoint's policy."""
    from policies.base import Policy

    policy = Policy.from_checkpoint(ckpt_path).eval()
    counts = param_counts(policy)
    n_obs = int(policy.config["n_obs_steps"])
    obs, goal = dummy_inputs(policy.shape_meta, n_obs)
    flops = count_flops(policy, obs, goal)
    policy.to(device)
    obs, goal = dummy_inputs(policy.shape_meta, n_obs, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    with torch.inference_mode():
        seconds = median_seconds(lambda: policy.predict_action(obs, goal), repeats=repeats, warmup=2, sync=sync)
    return {"params_total": int(counts["params_total"]), "params_active": int(counts["params_active"]),
            "flops_per_chunk": flops, "latency_b1_ms": seconds * 1e3, "latency_device": device_name(device),
            "latency_threads": torch.get_num_threads(), "latency_repeats": repeats}


def codebook_metrics(train_dir: str | Path) -> dict[str, float] | None:
    """The last logged train/codebook/<camera>/{entropy,perplexity,dead_codes} of a run (CSV logger), or
    None when the run logged none (no codebook, or another logger)."""
    path = Path(train_dir) / "csv" / "metrics.csv"
    if not path.is_file():
        return None
    last: dict[str, float] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key and key.startswith("train/codebook/") and value not in ("", None):
                    last[key[len("train/codebook/"):]] = float(value)
    return last or None
