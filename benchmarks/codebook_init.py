"""Where the task-conditioned codebook starts: how selective its lookup is, and how much of the image
reaches the token, per temperature, against the linear control (issue #13, item 5).

    python benchmarks/codebook_init.py [--temperatures 1,0.3,0.1,0.03] [--frames 64] [--seeds 3] [--save]

The default MoDE image policy of an MT50-shaped task (39-d state, one 84x84 camera, 50 tasks, a learned
task table as goal) is built untrained with `policy.codebook.kind=codebook` at each temperature and with
`kind=linear`, the same seed for everything but the bottleneck. One predict_action call on `--frames`
random camera frames (each with its own task) passes through the camera's bottleneck, which a forward
hook reads. Per case, JSON lines (bench codebook_init):
  entropy_ratio   mean per-frame entropy of the code weights / log K (1 = every lookup uniform)
  perplexity      exp(entropy of the batch-mean weights): codes in use, of K
  token_spread    std over frames of the bottleneck's output token, mean over channels
  spread_vs_linear  token_spread / the linear control's (how much of the frame-to-frame variation the
                  codebook passes on, relative to a bottleneck of the same width without codes)
A uniform lookup (entropy_ratio near 1) makes every token nearly the mean code: the image barely
reaches the policy until the indexer's scores grow. Random frames stand in for camera images: the
encoder is untrained, so what matters is the scale of its features, not their content.
"""

from __future__ import annotations

import argparse
import math
import statistics

import numpy as np
import torch

from benchmarks.common import Recorder
from data.normalize import Normalizer
from policies.base import Policy
from policies.encoders.codebook import CodebookConfig

CAMERA, STATE_DIM, N_TASKS, ACTION_DIM = "corner2_image", 39, 50, 4


def build(codebook: dict, seed: int) -> Policy:
    rng = np.random.default_rng(0)
    arrays = {"state": rng.normal(size=(256, STATE_DIM)).astype(np.float32),
              "action": rng.uniform(-1, 1, size=(256, ACTION_DIM)).astype(np.float32)}
    shape_meta = {"obs": {"state": {"shape": [STATE_DIM], "type": "low_dim"},
                          CAMERA: {"shape": [84, 84, 3], "type": "rgb"}},
                  "action": {"shape": [ACTION_DIM]}, "n_tasks": N_TASKS, "lang_dim": 0}
    normalizer = Normalizer.fit(arrays, {"state": "limits", "action": "limits"})
    torch.manual_seed(seed)
    return Policy.build("mode", {"codebook": codebook}, shape_meta, normalizer).eval()


def bottleneck_pass(policy: Policy, frames: int, seed: int) -> tuple[torch.Tensor, dict[str, float]]:
    """The camera bottleneck's output tokens [frames * To, width] and its usage metrics for one call."""
    module = policy.obs_encoder.image_filters[CAMERA]
    seen: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda m, args, out: seen.append(out.detach()))
    g = torch.Generator().manual_seed(seed)
    to = int(policy.config["n_obs_steps"])
    obs = {"state": torch.randn(frames, to, STATE_DIM, generator=g),
           CAMERA: torch.randint(0, 256, (frames, to, 84, 84, 3), generator=g, dtype=torch.uint8)}
    goal = {"task": torch.arange(frames) % N_TASKS}
    try:
        with torch.inference_mode():
            policy.predict_action(obs, goal)
    finally:
        handle.remove()
    return seen[0], {k: float(v) for k, v in module.usage_metrics().items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--temperatures", default="1,0.3,0.1,0.03")
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--save", action="store_true")
    args = ap.parse_args()
    temperatures = [float(t) for t in args.temperatures.split(",") if t]
    if not temperatures or min(temperatures) <= 0 or args.frames < 2 or args.seeds < 1:
        raise SystemExit("error: temperatures must be positive, --frames >= 2, --seeds >= 1")
    torch.set_num_threads(1)
    rec = Recorder("codebook_init", save=args.save)
    size = CodebookConfig().size  # K of the default codebook
    linear = [bottleneck_pass(build({"kind": "linear"}, s), args.frames, s)[0].std(0).mean().item()
              for s in range(args.seeds)]
    ctx = {"frames": args.frames, "seeds": args.seeds, "codes": size}
    rec.emit("linear", "token_spread", statistics.fmean(linear), per_seed=[round(x, 5) for x in linear], **ctx)
    for t in temperatures:
        rows = []
        for s in range(args.seeds):
            tokens, usage = bottleneck_pass(build({"kind": "codebook", "temperature": t}, s), args.frames, s)
            spread = tokens.std(0).mean().item()
            rows.append({"entropy_ratio": usage["entropy"] / math.log(size), "perplexity": usage["perplexity"],
                         "token_spread": spread, "spread_vs_linear": spread / linear[s]})
        for metric, unit in (("entropy_ratio", "fraction"), ("perplexity", "codes"), ("token_spread", ""),
                             ("spread_vs_linear", "x")):
            values = [r[metric] for r in rows]
            rec.emit(f"codebook-T{t:g}", metric, statistics.fmean(values), unit, temperature=t,
                     per_seed=[round(v, 5) for v in values], **ctx)
    rec.write()


if __name__ == "__main__":
    main()
