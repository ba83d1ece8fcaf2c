"""Chunk transitions under inference delay, in simulation (JSON lines): success and boundary smoothness of
switch / blend / rtc at latency_ms 100, 200, 300 against the zero-latency run of the same checkpoint.

    python -m benchmarks.latency_study CHECKPOINT [--episodes 50] [--latencies 100 200 300] [--save]

Each case is `eval_rollouts.py checkpoint=... latency_ms=L transition=T` (rollouts/latency.py: the env
executes the queued actions while the request is in flight) on the same episodes and seeds. At latency 0
every transition is plain re-planning (nothing is in flight), so it runs once.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.common import Recorder
from training.evaluate import evaluate, load_config


def run_case(ckpt: str, episodes: int, workers: int, out: Path, *overrides: str) -> dict:
    cfg = load_config([f"checkpoint={ckpt}", f"n_episodes={episodes}", f"workers={workers}", "video.n=0",
                       "logger=none", "progress=false", f"out={out}", *overrides])
    return evaluate(cfg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--n-action-steps", type=int, default=None,
                        help="execution horizon (< the policy's chunk: the old chunk overlaps the new one)")
    parser.add_argument("--latencies", type=int, nargs="+", default=[100, 200, 300])
    parser.add_argument("--transitions", nargs="+", default=["switch", "blend", "rtc"])
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/serving-latency-cpu.jsonl")
    parser.add_argument("--table", metavar="JSONL", help="print a results file as a markdown table")
    args = parser.parse_args()
    if args.table:
        return print_table(Path(args.table))
    if not args.checkpoint:
        parser.error("give a checkpoint")
    rec = Recorder("serving-latency", "cpu", save=args.save)
    with tempfile.TemporaryDirectory() as tmp:
        cases = [(0, None)] + [(lat, t) for lat in args.latencies for t in args.transitions]
        for i, (latency, transition) in enumerate(cases):
            extra = [] if transition is None else [f"latency_ms={latency}", f"transition={transition}"]
            if args.n_action_steps:
                extra.append(f"n_action_steps={args.n_action_steps}")
            info = run_case(args.checkpoint, args.episodes, args.workers, Path(tmp) / str(i), *extra)
            agg = info["aggregate"]
            case = f"{transition or 'replan'}-{latency}ms"
            ctx = {"checkpoint": args.checkpoint, "tasks": list(info["per_task"]), "n_episodes": agg["n_episodes"],
                   "latency_ms": latency, "transition": transition or "replan",
                   "n_action_steps": agg["n_action_steps"]}
            rec.emit(case, "success_rate", agg["success_rate"], "", ci95=agg["success_ci95"], **ctx)
            smooth = agg.get("transition") or {}
            for key in ("boundary_jump_p50", "boundary_jump_max", "within_chunk_p99"):
                if key in smooth:
                    rec.emit(case, key, smooth[key], "action units", delay_steps=smooth["delay_steps"], **ctx)
    path = rec.write()
    if path:
        print(f"# wrote {path}")


def print_table(path: Path) -> None:
    """One row per case: success [95% CI], boundary jump p50 / max, within-chunk p99."""
    import json

    rows: dict[str, dict] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        rows.setdefault(r["case"], {})[r["metric"]] = r
    print("| case | success [95% CI] | boundary jump p50 / max | within-chunk p99 |\n|---|---|---|---|")
    for case, m in rows.items():
        s = m["success_rate"]
        lo, hi = s["ci95"]
        jumps = (f"{m['boundary_jump_p50']['value']:.3f} / {m['boundary_jump_max']['value']:.3f}"
                 if "boundary_jump_p50" in m else "-")
        within = f"{m['within_chunk_p99']['value']:.3f}" if "within_chunk_p99" in m else "-"
        print(f"| {case} | {s['value']:.2f} [{lo:.2f}, {hi:.2f}] (n={s['n_episodes']}) | {jumps} | {within} |")


if __name__ == "__main__":
    main()
