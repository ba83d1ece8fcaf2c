"""Codebook / DTR ablation on robosuite Lift with 84x84 images (issue 8), sized for a 2-core CPU.

    .venv/bin/python scripts/ablation_codebook.py                 # all four variants, then the table
    .venv/bin/python scripts/ablation_codebook.py --table-only    # rebuild the table from finished runs

Trains MoDE four ways with the same demonstrations, budget and seed (`python train.py ...`):
    mode            no image filter, learned router (the default MoDE)
    mode_codebook   policy.codebook.kind=codebook (Eftekhar et al. 2023; K=256, code dim 10, softmax)
    mode_linear     policy.codebook.kind=linear   (the control: a 10-wide linear bottleneck)
    mode_dtr        policy.router=dtr             (Denoising Task Routing instead of the learned router)
evaluates each run's last.ckpt by rollouts (`python eval_rollouts.py ...`), and writes a markdown table
(success with its Wilson 95% interval, episodes, steps, wall times, final losses, the exact commands)
to --notes. Logs go to <out>/logs/. A variant whose eval_info.json exists is not rerun (--force reruns).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "mode": [],
    "mode_codebook": ["policy.codebook.kind=codebook"],
    "mode_linear": ["policy.codebook.kind=linear"],
    "mode_dtr": ["policy.router=dtr"],
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/ablation_codebook", help="run directories and logs")
    p.add_argument("--dataset", default="datasets/lift_image_ablation.zarr", help="generated when missing")
    p.add_argument("--demos", type=int, default=50)
    p.add_argument("--steps", type=int, default=400, help="optimizer steps per run")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--base-channels", type=int, default=16, help="ResNet-18 width (32 = the CPU default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--eval-max-steps", type=int, default=150,
                   help="rollout cap (scripted demos take ~40 steps; the env horizon is 400)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (shared CPU)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma list of " + ", ".join(VARIANTS))
    p.add_argument("--notes", default="/work/notes/ablation_results.md", help="where the table goes")
    p.add_argument("--force", action="store_true", help="rerun variants that already have results")
    p.add_argument("--table-only", action="store_true", help="only rebuild the table from finished runs")
    return p.parse_args()


def commands(args: argparse.Namespace, variant: str) -> tuple[list[str], list[str]]:
    run_dir = f"{args.out}/{variant}"
    train = [
        "train.py", "task=lift_image", f"task.dataset={args.dataset}", f"task.n_demos={args.demos}",
        "policy=mode", *VARIANTS[variant], f"policy.image_encoder.base_channels={args.base_channels}",
        f"data.batch_size={args.batch}", f"data.val_batch_size={args.batch}",
        f"trainer.max_steps={args.steps}", "trainer.val_check_interval=100", "trainer.limit_val_batches=2",
        "trainer.log_every_n_steps=10", "trainer.enable_progress_bar=false", "logger=csv",
        f"seed={args.seed}", f"run_dir={run_dir}",
    ]
    evaluate = [
        "eval_rollouts.py", f"checkpoint={run_dir}", f"n_episodes={args.episodes}", "workers=2", "video.n=0",
        f"max_steps={args.eval_max_steps}", "logger=none", "progress=false", f"out={run_dir}/eval",
    ]
    return train, evaluate


def run(argv: list[str], log: Path, threads: int) -> float:
    """Run `python argv...` in the repo root with output to `log`; returns the wall time in seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "WANDB_MODE": "offline"}
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as f:
        f.write("$ python " + shlex.join(argv) + "\n")
        f.flush()
        proc = subprocess.run([sys.executable, *argv], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): python {shlex.join(argv)}; see {log}")
    return wall


# --- the table ------------------------------------------------------------------------------
def read_metrics(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.csv of the CSV logger -> {metric: [(step, value), ...]}."""
    series: dict[str, list[tuple[int, float]]] = {}
    with open(run_dir / "csv" / "metrics.csv") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key not in ("epoch", "step") and value not in ("", None):
                    series.setdefault(key, []).append((int(row["step"]), float(value)))
    return series


def param_counts(run_dir: Path) -> dict[str, int]:
    sys.path.insert(0, str(ROOT))
    from policies.base import Policy

    return Policy.from_checkpoint(run_dir / "checkpoints" / "last.ckpt", map_location="cpu").param_counts()


def summarize(args: argparse.Namespace, variant: str) -> dict | None:
    run_dir = ROOT / args.out / variant
    info_path, timing_path = run_dir / "eval" / "eval_info.json", run_dir / "timing.json"
    if not info_path.is_file():
        return None
    agg = json.loads(info_path.read_text())["aggregate"]
    metrics = read_metrics(run_dir)
    train_loss = [v for _, v in metrics.get("train/loss", [])]
    val = metrics.get("val/loss", [])
    usage = {k.split("/")[2]: v[-1][1] for k, v in metrics.items() if k.endswith("/perplexity")}
    return {
        "variant": variant, "overrides": " ".join(VARIANTS[variant]) or "(defaults)",
        "success": agg["success_rate"], "ci": agg["success_ci95"], "n_success": agg["n_success"],
        "episodes": agg["n_episodes"], "errors": agg["n_errors"], "mean_steps": agg["mean_steps"],
        "steps": max(s for s, _ in metrics["train/loss"]) + 1 if train_loss else 0,
        "timing": json.loads(timing_path.read_text()) if timing_path.is_file() else {},
        "train_loss": sum(train_loss[-5:]) / max(1, len(train_loss[-5:])),
        "val_curve": val, "val_mse": metrics.get("val/action_mse", [(0, float("nan"))])[-1][1],
        "params": param_counts(run_dir), "perplexity": usage,
    }


def table(args: argparse.Namespace, rows: list[dict]) -> str:
    lines = [
        "# Codebook / DTR ablation on robosuite Lift, 84x84 images (issue 8) -- CPU-sized", "",
        f"**CPU-sized, not the paper's budget**: a 2-core CPU shared with other jobs, {args.demos} scripted "
        f"demonstrations, {args.steps} optimizer steps at batch {args.batch}, ResNet-18 (GroupNorm, FiLM) at "
        f"base width {args.base_channels}, seed {args.seed}, one run per variant, {args.episodes} rollout "
        f"episodes each capped at {args.eval_max_steps} env steps (demonstrations take ~40). The numbers "
        "compare the variants at this tiny budget only; they say nothing about converged policies.", "",
        "| variant | overrides | success [Wilson 95%] | episodes | train steps | train wall (s) "
        "| eval wall (s) | final train loss | final val loss | val action MSE | params total / active |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        (lo, hi), t, p = r["ci"], r["timing"], r["params"]
        val = r["val_curve"][-1][1] if r["val_curve"] else float("nan")
        cells = [r["variant"], f"`{r['overrides']}`",
                 f"{r['success']:.2f} [{lo:.2f}, {hi:.2f}] ({r['n_success']}/{r['episodes']})",
                 str(r["episodes"]), str(r["steps"]), f"{t.get('train_s', 0):.0f}",
                 f"{t.get('eval_s', 0):.0f}",
                 f"{r['train_loss']:.4f}", f"{val:.4f}", f"{r['val_mse']:.4f}",
                 f"{p['params_total'] / 1e6:.2f}M / {p['params_active'] / 1e6:.2f}M"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Final train loss: mean of the last 5 logged values (logged every 10 steps); val loss: EMA "
              "weights, 2 validation batches; val action MSE: a sampled chunk vs the demonstrated one (env "
              "units, 1 batch). Wall times include process start-up and, for training, validation.", "",
              "Validation loss during training (the training curve):", "",
              "| variant | " + " | ".join(f"step {s + 1}" for s, _ in rows[0]["val_curve"]) + " |",
              "|---|" + "---|" * len(rows[0]["val_curve"])]
    for r in rows:
        lines.append(f"| {r['variant']} | " + " | ".join(f"{v:.4f}" for _, v in r["val_curve"]) + " |")
    usage = [r for r in rows if r["perplexity"]]
    if usage:
        per_run = [r["variant"] + ": " + ", ".join(f"{k} {v:.1f}" for k, v in r["perplexity"].items())
                   for r in usage]
        lines += ["", "Code usage at the last logged step (perplexity of the batch-mean code weights; 256 = "
                  "uniform): " + "; ".join(per_run)]
    lines += ["", "## Commands", "", "The whole table (dataset generation included) is reproduced by", "",
              "```", f".venv/bin/python scripts/ablation_codebook.py --steps {args.steps} "
              f"--episodes {args.episodes} --threads {args.threads}", "```", "",
              f"which runs, from the repo root with OMP_NUM_THREADS={args.threads}:", "", "```"]
    for r in rows:
        train, evaluate = commands(args, r["variant"])
        lines += ["python " + shlex.join(train), "python " + shlex.join(evaluate)]
    return "\n".join(lines + ["```"]) + "\n"


def main() -> None:
    args = parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    logs = ROOT / args.out / "logs"
    for variant in [] if args.table_only else variants:
        run_dir = ROOT / args.out / variant
        if (run_dir / "eval" / "eval_info.json").is_file() and not args.force:
            print(f"{variant}: done already ({run_dir}); --force reruns it")
            continue
        train, evaluate = commands(args, variant)
        print(f"{variant}: training ({logs / (variant + '-train.log')})", flush=True)
        timing = {"train_s": run(train, logs / f"{variant}-train.log", args.threads)}
        print(f"{variant}: evaluating ({logs / (variant + '-eval.log')})", flush=True)
        timing["eval_s"] = run(evaluate, logs / f"{variant}-eval.log", args.threads)
        (run_dir / "timing.json").write_text(json.dumps(timing))
    rows = [r for r in (summarize(args, v) for v in variants) if r is not None]
    if not rows:
        raise SystemExit(f"no finished variant under {args.out}; run without --table-only first")
    text = table(args, rows)
    Path(args.notes).parent.mkdir(parents=True, exist_ok=True)
    Path(args.notes).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
