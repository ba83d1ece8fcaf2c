"""Rollout runner throughput on robosuite Lift: env steps/s and episodes/s, 1 vs 2 workers, state and image.

The policy is a stand-in that returns random action chunks of the right shape in microseconds, so
the numbers measure the runner and the simulator, not a network. Random actions never succeed,
so every episode runs `--max-steps` steps (default 120: about twice the ~60 steps the scripted
expert needs, i.e. the length of an episode a trained policy finishes).

Cases: lift-{state,image}-w{1,2} (warm workers: env construction excluded; median of --repeats
runs), the ratio w2_vs_w1-lift-{state,image}, and lift-state-w2-cold50: wall time of one 50-episode
evaluation from a cold start (spawning workers and building envs included), the issue's target.

    .venv/bin/python benchmarks/rollout_throughput.py [--quick] [--save]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import torch  # noqa: E402
from common import Recorder  # noqa: E402

from envs.runner import Runner  # noqa: E402

ACTION_DIM = 7  # Lift with the OSC_POSE controller
N_OBS_STEPS, N_ACTION_STEPS, HORIZON = 2, 8, 16


class RandomChunkPolicy:
    """Uniform random chunks [B, HORIZON, 7] in [-1, 1]; no parameters, negligible cost."""

    def __init__(self, seed: int = 0) -> None:
        self.config = {"n_obs_steps": N_OBS_STEPS, "n_action_steps": N_ACTION_STEPS}
        self._gen = torch.Generator().manual_seed(seed)

    def predict_action(self, obs, goal):
        b = goal["task"].shape[0]
        return torch.rand(b, HORIZON, ACTION_DIM, generator=self._gen) * 2 - 1


def lift_task(image: bool) -> dict:
    spec = {"simulator": "robosuite", "task": "Lift", "horizon": 400}
    if image:
        spec.update(cameras=["agentview"], image_size=84)
    return {"name": "Lift", "instruction": "", "env_spec": spec}


def measure(rec: Recorder, obs_kind: str, workers: int, n_episodes: int, max_steps: int,
            repeats: int) -> float:
    """Steady-state env steps/s with warm workers (median over repeats); emits both rates."""
    policy = RandomChunkPolicy()
    with Runner([lift_task(obs_kind == "image")], workers=workers) as runner:
        runner.run(policy, workers, max_steps=N_ACTION_STEPS, progress=False)  # spawn + build envs
        runs = [runner.run(policy, n_episodes, max_steps=max_steps, progress=False) for _ in range(repeats)]
    errors = sum(m["n_errors"] for m in runs)
    if errors:
        raise RuntimeError(f"{errors} episodes errored: {[r['error'] for m in runs for r in m['episodes']]}")
    steps_per_s = statistics.median(m["env_steps_per_s"] for m in runs)
    eps_per_s = statistics.median(m["episodes_per_s"] for m in runs)
    ctx = dict(workers=workers, obs=obs_kind, n_episodes=n_episodes, max_steps=max_steps, repeats=repeats,
               n_action_steps=N_ACTION_STEPS)
    case = f"lift-{obs_kind}-w{workers}"
    rec.emit(case, "env_steps_per_s", steps_per_s, "steps/s", **ctx)
    rec.emit(case, "episodes_per_s", eps_per_s, "episodes/s", **ctx)
    return steps_per_s


def cold_eval(rec: Recorder, n_episodes: int, max_steps: int) -> None:
    """One evaluation as a user runs it: fresh workers, envs built inside the timing."""
    t0 = time.perf_counter()
    with Runner([lift_task(False)], workers=2) as runner:
        m = runner.run(RandomChunkPolicy(), n_episodes, max_steps=max_steps, progress=False)
    wall = time.perf_counter() - t0
    ctx = dict(workers=2, obs="state", n_episodes=n_episodes, max_steps=max_steps, env_steps=m["env_steps"])
    rec.emit(f"lift-state-w2-cold{n_episodes}", "ms", wall * 1000, "ms", **ctx)
    rec.emit(f"lift-state-w2-cold{n_episodes}", "episodes_per_s", n_episodes / wall, "episodes/s", **ctx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a reduced run")
    parser.add_argument("--save", action="store_true",
                        help="write benchmarks/results/rollout_throughput-cpu.jsonl")
    parser.add_argument("--max-steps", type=int, help="steps per episode (default 120; quick 40)")
    parser.add_argument("--episodes", type=int, help="episodes per timed run (default 20; quick 4)")
    parser.add_argument("--repeats", type=int, help="timed runs per case (default 3; quick 1)")
    parser.add_argument("--obs", choices=["state", "image", "both"], default="both")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the main process only stacks observations; leave the cores to the workers
    max_steps = args.max_steps or (40 if args.quick else 120)
    n_episodes = args.episodes or (4 if args.quick else 20)
    repeats = args.repeats or (1 if args.quick else 3)
    rec = Recorder("rollout_throughput", "cpu", save=args.save)
    kinds = ["state", "image"] if args.obs == "both" else [args.obs]
    for kind in kinds:
        w1 = measure(rec, kind, 1, n_episodes, max_steps, repeats)
        w2 = measure(rec, kind, 2, n_episodes, max_steps, repeats)
        rec.ratio(f"w2_vs_w1-lift-{kind}", "speedup", w2 / w1, max_steps=max_steps, n_episodes=n_episodes)
    if not args.quick and "state" in kinds:
        cold_eval(rec, 50, max_steps)
    path = rec.write()
    if path:
        print(f"saved {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
