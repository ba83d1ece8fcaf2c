"""A stand-in for `python -m data.generate` in the suite tests: a demo store for the fake env.

    python -m tests.benchmarks.fake_demos out=PATH n_episodes=N tasks=a,b

Stores carry valid env specs (a Meta-World spec named after the task, horizon 6), and `make_env` here
(`env_factory=tests.benchmarks.fake_demos:make_env` for eval_rollouts.py) builds the fake env of
tests/envs/fake_env.py from such a spec: task `a` succeeds at step 3 on every seed, any other task never
does, so a suite's success table is known in advance (a: 1.0, b: 0.0). Episodes go to the tasks in turn;
observations are the fake env's 4-d `state`, actions 2-d.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from data.store import DemoStore
from tests.envs.fake_env import FakeEnv

LENGTH = 8
HORIZON = 6


def task_entry(name: str) -> dict[str, Any]:
    return {"name": name, "instruction": f"do {name}",
            "env_spec": {"simulator": "metaworld", "task": name, "horizon": HORIZON}}


def make_env(spec: dict[str, Any], **kwargs: Any) -> FakeEnv:
    task = spec["task"]
    return FakeEnv({"horizon": spec["horizon"], "task_id": ord(task[0]) - ord("a"),
                    "succeed_at": 3 if task == "a" else None, **kwargs})


def write_store(out: str, n_episodes: int, task_names: list[str]) -> DemoStore:
    store = DemoStore.create(out, tasks=[task_entry(n) for n in task_names])
    for seed in range(n_episodes):
        task = seed % len(task_names)
        rng = np.random.default_rng(seed)
        t = np.arange(LENGTH, dtype=np.float32)
        action = rng.uniform(-1, 1, size=(LENGTH, 2)).astype(np.float32)
        last = np.concatenate([[0.0], action[:-1, 0]]).astype(np.float32)
        state = np.stack([t, np.full(LENGTH, seed), last, np.full(LENGTH, task)], axis=1).astype(np.float32)
        store.append_episode({"state": state, "action": action}, task=task, seed=seed)
    return store


def main(argv: list[str]) -> int:
    args = dict(a.split("=", 1) for a in argv)
    store = write_store(args["out"], int(args["n_episodes"]), args.get("tasks", "a").split(","))
    print(f"{store.path}: {store.n_episodes} episodes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
