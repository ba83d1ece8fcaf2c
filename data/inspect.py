"""Print what a demo store holds: `python -m data.inspect PATH`."""

from __future__ import annotations

import sys

import numpy as np

from data.store import DemoStore, StoreError


def describe(path: str) -> str:
    store = DemoStore.open(path, "r")
    lengths = store.episode_lengths
    lines = [
        f"store      {path}",
        f"episodes   {store.n_episodes}   steps {store.n_steps}"
        + (f"   length min/mean/max {lengths.min()}/{lengths.mean():.1f}/{lengths.max()}" if len(lengths) else ""),
    ]
    if store.n_episodes:
        lines.append(f"success    {store.episode_success.mean():.1%} of stored episodes")
    lines.append("keys")
    for k in store.keys:
        arr = store.array(k)
        lines.append(f"  {k:<32} {str(tuple(arr.shape)):<22} {arr.dtype}")
    lines.append("tasks")
    counts = np.bincount(store.episode_task, minlength=len(store.tasks)) if store.n_episodes else None
    for i, t in enumerate(store.tasks):
        n = 0 if counts is None else counts[i]
        sim = t.get("env_spec", {}).get("simulator", "?")
        lines.append(f"  [{i}] {t['name']:<24} {n:>5} episodes  ({sim})  \"{t['instruction']}\"")
    if store.n_steps:
        action = store.load(["action"])["action"].astype(np.float64)
        lines.append("action statistics (per dimension)")
        for name, values in (("min", action.min(0)), ("max", action.max(0)),
                             ("mean", action.mean(0)), ("std", action.std(0))):
            lines.append(f"  {name:<5} " + " ".join(f"{v:+.3f}" for v in values))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: python -m data.inspect PATH", file=sys.stderr)
        return 2
    try:
        print(describe(argv[0]))
    except StoreError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
