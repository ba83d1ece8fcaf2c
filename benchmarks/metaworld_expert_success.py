"""Success of Meta-World's built-in scripted experts, and env throughput, as JSON lines.

    python benchmarks/metaworld_expert_success.py                 # MT50, 10 seeds per task
    python benchmarks/metaworld_expert_success.py --tasks mt10 --seeds 50
    python benchmarks/metaworld_expert_success.py --quick         # 3 tasks, 3 seeds, short throughput

An episode succeeds when info["success"] is true at any step within the horizon (Meta-World's
evaluation protocol); it ends there, so its length is the number of steps to success.
Throughput (env_steps_per_s) is measured with the expert acting (resets included), state
only and with one 84x84 camera under fast and full render settings.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.common import run_expert_episode  # noqa: E402
from envs.experts.metaworld_expert import MetaWorldExpert  # noqa: E402
from envs.metaworld_env import make_metaworld_env  # noqa: E402
from envs.metaworld_tasks import metaworld_spec  # noqa: E402

BENCH = "metaworld_expert"
QUICK_TASKS = ["reach-v3", "push-v3", "drawer-open-v3"]


def emit(case: str, metric: str, value: float, unit: str, **context: object) -> None:
    line = {"bench": BENCH, "case": case, "metric": metric, "value": value, "unit": unit, "device": "cpu"}
    line.update(metaworld=version("metaworld"), mujoco=version("mujoco"))
    line.update(context)
    print(json.dumps(line), flush=True)


def expert_success(task: str, seeds: list[int], horizon: int | None) -> dict[str, float]:
    spec = metaworld_spec(task, images=False, horizon=horizon)
    env, expert = make_metaworld_env(spec), MetaWorldExpert(spec)
    start = time.perf_counter()
    results = [run_expert_episode(env, expert, s) for s in seeds]
    env.close()
    lengths = [n for ok, n in results if ok]
    success = [ok for ok, _ in results]
    emit(
        task,
        "success_rate",
        float(np.mean(success)),
        "fraction",
        n_seeds=len(seeds),
        first_seed=seeds[0],
        horizon=spec.horizon,
        failed_seeds=[s for s, ok in zip(seeds, success) if not ok],
        mean_episode_length=float(np.mean(lengths)) if lengths else None,
        max_episode_length=int(max(lengths)) if lengths else None,
        success_rate_within_200=float(np.mean([ok and n <= 200 for ok, n in results])),
        seconds=round(time.perf_counter() - start, 2),
    )
    return {"success_rate": float(np.mean(success)), "mean_episode_length": float(np.mean(lengths or [0]))}


def throughput(task: str, images: bool, render: str, n_steps: int, repeats: int) -> float:
    """Median env steps/s over `repeats` runs of n_steps, after one warm-up episode start."""
    spec = metaworld_spec(task, images=images, render=render)
    env, expert = make_metaworld_env(spec), MetaWorldExpert(spec)
    rates = []
    for r in range(repeats + 1):
        obs, _ = env.reset(seed=r)
        start = time.perf_counter()
        for _ in range(n_steps):
            obs, _, terminated, truncated, _ = env.step(expert.act(env, obs))
            if terminated or truncated:  # resets count: demo generation pays for them too
                obs, _ = env.reset()
        if r > 0:  # the first run warms up the GL context and caches
            rates.append(n_steps / (time.perf_counter() - start))
    env.close()
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", default="mt50", help="mt10, mt50 or comma-separated task names")
    parser.add_argument("--seeds", type=int, default=10, help="episodes (seeds) per task")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--horizon", type=int, default=None, help="default: Meta-World's max_path_length")
    parser.add_argument("--throughput-tasks", default=",".join(QUICK_TASKS))
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--only-throughput", action="store_true")
    parser.add_argument("--quick", action="store_true", help="3 tasks, 3 seeds, short throughput runs")
    args = parser.parse_args()

    from envs import metaworld_tasks

    if args.quick:
        tasks, n_seeds, steps, repeats = QUICK_TASKS, 3, {"state": 100, "fast": 20, "full": 3}, 1
    else:
        named = {"mt10": metaworld_tasks.MT10, "mt50": metaworld_tasks.MT50}
        tasks = named.get(args.tasks.lower()) or args.tasks.split(",")
        n_seeds, steps, repeats = args.seeds, {"state": 400, "fast": 100, "full": 20}, 3

    seeds = list(range(args.first_seed, args.first_seed + n_seeds))
    results = {} if args.only_throughput else {t: expert_success(t, seeds, args.horizon) for t in tasks}
    for name in ("MT10", "MT50"):
        group = getattr(metaworld_tasks, name)
        if all(t in results for t in group):
            emit(
                name.lower(),
                "success_rate",
                float(np.mean([results[t]["success_rate"] for t in group])),
                "fraction",
                n_tasks=len(group),
                n_seeds=n_seeds,
                mean_episode_length=float(np.mean([results[t]["mean_episode_length"] for t in group])),
            )

    if args.no_throughput:
        return
    image = {"image_size": 84, "camera": "corner2"}
    for task in args.throughput_tasks.split(",") if not args.quick else QUICK_TASKS[:1]:
        state = throughput(task, False, "fast", steps["state"], repeats)
        emit(f"{task}-state", "env_steps_per_s", round(state, 1), "steps/s", n_steps=steps["state"])
        fast = throughput(task, True, "fast", steps["fast"], repeats)
        emit(f"{task}-image-fast", "env_steps_per_s", round(fast, 1), "steps/s", **image)
        full = throughput(task, True, "full", steps["full"], repeats)
        emit(f"{task}-image-full", "env_steps_per_s", round(full, 1), "steps/s", **image)
        emit(f"{task}-image-fast_vs_{task}-image-full", "speedup", round(fast / full, 2), "x")


if __name__ == "__main__":
    main()
