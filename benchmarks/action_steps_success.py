"""Rollout success per execution horizon: how many actions of each predicted chunk to execute.

  python -m benchmarks.action_steps_success [NAME=]CHECKPOINT ... [--action-steps 8,4] [--episodes 50]
      [--workers 2] [--out DIR] [--save] [--eval KEY=VALUE ...]

A diffusion policy predicts `horizon` actions and executes the first `n_action_steps` (Ta) of them
before it plans again: a long Ta runs open loop for longer, a short one reacts sooner and calls the
policy more often. Each checkpoint is evaluated for every Ta (eval_rollouts.py's `n_action_steps=K`,
training/evaluate.py) on the same evaluation seeds, each episode with its own sampling noise, so the
episodes pair up across Ta; the first Ta listed is the reference. JSON lines (bench
action_steps_success), per (run, Ta): success_rate with its Wilson 95% interval and policy calls per
episode; against the reference, the episodes only one of the two solved and the exact McNemar p; then
the same pooled over all runs (case `all`). With --out, an evaluation already there for the same
checkpoint, episodes and Ta is reused, so an interrupted sweep goes on where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import Recorder
from envs.seeds import EVAL_SEED_START
from rollouts.stats import mcnemar_exact, wilson_interval


def parse_action_steps(text: str) -> list[int]:
    try:
        steps = [int(s) for s in text.split(",") if s]
    except ValueError:
        raise SystemExit(f"--action-steps takes integers separated by commas, got {text!r}") from None
    if not steps or min(steps) < 1 or len(set(steps)) != len(steps):
        raise SystemExit(f"--action-steps needs distinct integers >= 1, got {text!r}")
    return steps


def named_runs(args: list[str]) -> dict[str, str]:
    """{name: checkpoint path} from [NAME=]CHECKPOINT arguments; an unnamed one is run1, run2, ... The name
    is also the folder of its rollouts under --out, so it may not leave that folder."""
    runs: dict[str, str] = {}
    for i, arg in enumerate(args, 1):
        name, _, path = arg.rpartition("=")
        name = name or f"run{i}"
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or name in runs:
            raise SystemExit(f"run names are distinct letters, digits, '.', '_' and '-'; got {name!r} in {arg!r}")
        runs[name] = path
    return runs


def reusable(out: Path, checkpoint: Path, episodes: int, action_steps: int) -> dict[str, Any] | None:
    """The eval_info.json in `out` when it is this evaluation's (checkpoint, episodes, Ta)."""
    try:
        info = json.loads((out / "eval_info.json").read_text())
    except (OSError, ValueError):
        return None
    agg = info.get("aggregate", {})
    # "sampling_noise" recorded: made by an evaluation whose noise does not depend on the workers' timing
    same = Path(info.get("checkpoint", "")).resolve() == checkpoint.resolve() and agg.get("n_episodes") == episodes \
        and agg.get("n_action_steps") == action_steps and "sampling_noise" in agg
    return info if same else None


def evaluate(checkpoint: Path, action_steps: int, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One rollout evaluation of `checkpoint` executing `action_steps` actions per chunk."""
    from training import evaluate as ev

    info = reusable(out, checkpoint, args.episodes, action_steps)
    if info is not None:
        print(f"# {out}: evaluated earlier, reused")
        return info
    cfg = ev.load_config([f"checkpoint={checkpoint}", f"n_episodes={args.episodes}", f"workers={args.workers}",
                          f"seed_offset={EVAL_SEED_START}", f"n_action_steps={action_steps}", "video.n=0",
                          "logger=none", "progress=false", f"out={out}", *args.eval])
    try:
        return ev.evaluate(cfg)
    except ev.EvalError as err:
        raise SystemExit(f"action_steps_success: {err}") from None


def outcomes(info: dict[str, Any]) -> dict[int, bool]:
    """Success per evaluation seed (an episode that errored counts as a failure, as in the success rate)."""
    return {int(e["seed"]): bool(e["success"]) for e in info["episodes"]}


def calls_per_episode(info: dict[str, Any], action_steps: int) -> float:
    """Policy calls an episode made: one per chunk of `action_steps` executed actions."""
    eps = info["episodes"]
    return sum(math.ceil(e["steps"] / action_steps) for e in eps) / len(eps) if eps else 0.0


def emit_pair(rec: Recorder, case: str, ref: dict[Any, bool], got: dict[Any, bool], **ctx: Any) -> None:
    """Success of `got`, and against `ref` on the episodes both ran: who alone solved how many, McNemar p."""
    k, n = sum(got.values()), len(got)
    lo, hi = wilson_interval(k, n)
    rec.emit(case, "success_rate", k / n if n else 0.0, "fraction", n_success=k, episodes=n, ci95_low=lo,
             ci95_high=hi, **ctx)
    both = ref.keys() & got.keys()
    only_this, only_ref = sum(got[s] and not ref[s] for s in both), sum(ref[s] and not got[s] for s in both)
    rec.emit(case, "mcnemar_p", mcnemar_exact(only_this, only_ref), "", only_this=only_this, only_reference=only_ref,
             paired=len(both), **ctx)


def main() -> None:
    from training.checkpoint import resolve_checkpoint

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", metavar="[NAME=]CHECKPOINT",
                        help="training checkpoints (.ckpt) or run directories")
    parser.add_argument("--action-steps", default="8,4", help="Ta values; the first is the reference")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=None, help="rollouts directory (default: a temporary one)")
    parser.add_argument("--save", action="store_true",
                        help="write benchmarks/results/action_steps_success-<device>.jsonl")
    parser.add_argument("--eval", action="append", default=[], metavar="KEY=VALUE",
                        help="a conf/eval.yaml override for every evaluation (max_steps=200)")
    args = parser.parse_args()
    steps = parse_action_steps(args.action_steps)
    out = Path(args.out or tempfile.mkdtemp(prefix="action_steps_"))
    rec = Recorder("action_steps_success", save=args.save)
    pooled: dict[int, dict[tuple[str, int], bool]] = {ta: {} for ta in steps}
    runs = named_runs(args.checkpoints)
    for name, path in runs.items():
        checkpoint = resolve_checkpoint(path)
        ctx = {"run": name, "checkpoint": str(checkpoint), "reference_action_steps": steps[0],
               "seed_offset": EVAL_SEED_START}
        infos = {ta: evaluate(checkpoint, ta, out / name / f"ta{ta}", args) for ta in steps}
        for ta in steps:
            got = outcomes(infos[ta])
            pooled[ta].update({(name, seed): ok for seed, ok in got.items()})
            emit_pair(rec, f"ta{ta}", outcomes(infos[steps[0]]), got, action_steps=ta,
                      global_step=infos[ta].get("global_step"), **ctx)
            rec.emit(f"ta{ta}", "policy_calls_per_episode", calls_per_episode(infos[ta], ta), "calls",
                     action_steps=ta, **ctx)
    if len(runs) > 1:
        for ta in steps:
            emit_pair(rec, "all", pooled[steps[0]], pooled[ta], action_steps=ta, runs=len(runs),
                      reference_action_steps=steps[0])
    rec.finish(out)


if __name__ == "__main__":
    main()
