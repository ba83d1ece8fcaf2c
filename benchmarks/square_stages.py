"""Where a Square policy fails: the furthest stage of the task each evaluation episode reached.

  python -m benchmarks.square_stages [NAME=]CHECKPOINT ... [--episodes 50] [--workers 2] [--out DIR]
      [--save] [--eval KEY=VALUE ...]

A success rate says how often NutAssemblySquare is solved, not where the other episodes went wrong, and
that decides the next lever (a policy that never closes its grip on the nut needs other fixes than one
that carries the nut to the peg and jams it). The checkpoint is evaluated by rollouts as
`eval_rollouts.py` does (training/evaluate.py; by default on the suites' evaluation seeds from 1,000,000
and with the same sampling seed, so the successes are those of the suite's eval-last) in environments
built by `make_staged_env`, which only reads the simulator: its reward is each newly reached stage, so an
episode's return is the furthest stage it reached (STAGES, in the order the scripted expert of
envs/experts/robosuite_nut.py goes through them). JSON lines (bench square_stages): per stage the
fraction of episodes that reached at least it (with its 95% Wilson interval) and the fraction that
stopped there, for each checkpoint (`run` = NAME, or the path). Rollouts go to --out/<NAME> (default: a
temporary directory), never into the run directory.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Recorder
from envs.experts.robosuite_base import wrap, yaw_of
from envs.experts.robosuite_nut import NUT_HALF_HEIGHT, PEG_HALF_HEIGHT
from envs.factory import as_spec, make_env
from envs.seeds import EVAL_SEED_START  # where a suite's evaluation seeds start (its eval-last episodes)
from rollouts.stats import wilson_interval

STAGES = ("none", "grasped", "lifted", "over-peg", "aligned", "on-peg")
# over-peg: the nut's centre within the xy box robosuite's on_peg test uses (3 cm each way of the peg)
OVER_PEG_XY = 0.03
# aligned: the 4.55 cm hole leaves the 3.2 cm peg under 7 mm of play per side, and only when their sides
# are nearly parallel: at 0.1 rad of yaw the hole's corners already take 2.3 mm of that play
ALIGNED_XY, ALIGNED_YAW = 0.007, 0.1


def stage_of(rs: Any, furthest: int) -> int:
    """The furthest stage reached so far, given the earlier `furthest`, from robosuite env `rs`."""
    if rs._check_success():
        return len(STAGES) - 1
    nut = next(n for n in rs.nuts if "square" in n.name.lower())
    nut_id = rs.obj_body_id[nut.name]
    nut_pos = rs.sim.data.body_xpos[nut_id]
    peg_pos = rs.sim.data.body_xpos[rs.peg1_body_id]
    grasped = bool(rs._check_grasp(gripper=rs.robots[0].gripper, object_geoms=nut.contact_geoms))
    # lifted: held with its bottom above the peg's top, high enough to be carried over the peg
    above_peg = nut_pos[2] - NUT_HALF_HEIGHT > peg_pos[2] + PEG_HALF_HEIGHT
    dxy = np.abs(nut_pos[:2] - peg_pos[:2]).max()
    stage = 0
    if grasped:
        stage = 1
        if above_peg:
            stage = 2
            if dxy < OVER_PEG_XY:
                stage = 3
                yaw_error = abs(wrap(yaw_of(rs.sim.data.body_xmat[nut_id].reshape(3, 3)), np.pi / 2))
                if dxy < ALIGNED_XY and yaw_error < ALIGNED_YAW:
                    stage = 4
    return max(furthest, stage)


class StagedSquareEnv:
    """A NutAssemblySquare env whose reward is the stages newly reached (return = the furthest stage)."""

    def __init__(self, env: Any) -> None:
        self.env, self.furthest = env, 0

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self.furthest = stage_of(self.env.unwrapped_robosuite, 0)
        return obs, info

    def step(self, action):
        obs, _, success, truncated, info = self.env.step(action)
        before, self.furthest = self.furthest, stage_of(self.env.unwrapped_robosuite, self.furthest)
        return obs, float(self.furthest - before), success, truncated, {**info, "stage": STAGES[self.furthest]}

    def __getattr__(self, name: str) -> Any:  # render, close, env_spec, ...: the wrapped env's
        return getattr(self.env, name)


def make_staged_env(spec: Any) -> StagedSquareEnv:
    """The env factory (conf/eval.yaml env_factory) of this benchmark: NutAssemblySquare only."""
    spec = as_spec(spec)
    if spec.task != "NutAssemblySquare":
        raise ValueError(f"square_stages knows the stages of NutAssemblySquare only, got task {spec.task!r}")
    return StagedSquareEnv(make_env(spec))


def stage_counts(episodes: list[dict[str, Any]]) -> list[int]:
    """Episodes whose furthest stage is each of STAGES (an episode's return is its stage index)."""
    counts = [0] * len(STAGES)
    for ep in episodes:
        if ep.get("error"):
            continue
        counts[int(round(ep["return"]))] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", metavar="[NAME=]CHECKPOINT",
                        help="Square training checkpoints (.ckpt) or run directories")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed-offset", type=int, default=EVAL_SEED_START)
    parser.add_argument("--out", default=None, help="rollouts directory (default: a temporary one)")
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/square_stages-<device>.jsonl")
    parser.add_argument("--eval", action="append", default=[], metavar="KEY=VALUE",
                        help="a conf/eval.yaml override for every checkpoint (max_steps=200)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="square_stages_"))
    rec = Recorder("square_stages", save=args.save)
    for arg in args.checkpoints:
        name, _, path = arg.rpartition("=")
        measure(rec, name or path, path, out / (name or Path(path).stem), args)
    rec.finish(out)


def measure(rec: Recorder, name: str, checkpoint: str, out: Path, args: argparse.Namespace) -> None:
    """Evaluate one checkpoint in staged envs and emit its stage fractions."""
    from training import evaluate as ev

    cfg = ev.load_config([f"checkpoint={checkpoint}", f"n_episodes={args.episodes}", f"workers={args.workers}",
                          f"seed_offset={args.seed_offset}", "video.n=0", "logger=none", "progress=false",
                          f"out={out}", "env_factory=benchmarks.square_stages:make_staged_env", *args.eval])
    try:
        episodes = ev.evaluate(cfg)["episodes"]
    except ev.EvalError as err:
        raise SystemExit(f"square_stages: {err}") from None
    counts = stage_counts(episodes)
    n = sum(counts)
    ctx = {"run": name, "checkpoint": checkpoint, "episodes": n, "seed_offset": args.seed_offset,
           "n_errors": len(episodes) - n}
    for i, stage in enumerate(STAGES):
        reached = sum(counts[i:])
        lo, hi = wilson_interval(reached, n)
        rec.emit(stage, "reached", reached / n if n else 0.0, "fraction", n_reached=reached,
                 ci95_low=lo, ci95_high=hi, **ctx)
        rec.emit(stage, "stopped_here", counts[i] / n if n else 0.0, "fraction", n_stopped=counts[i], **ctx)


if __name__ == "__main__":
    main()
