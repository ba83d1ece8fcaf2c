"""Generate demonstrations with the scripted experts into a demo store.

    python -m data.generate task=lift n_episodes=100 out=datasets/lift.zarr images=false workers=2

Keys: task (a name, a set such as mt10, or a comma list), n_episodes (total; spread evenly over
the tasks), out, images, workers (spawned processes; 0 runs in this process), seed, noise
(expert action noise), keep_failed, image_size, horizon.

Seeds: the episodes of each task use env seeds seed, seed+1, seed+2, ... (a failed, dropped
seed is skipped, so the next one fills in). Evaluation uses seeds from EVAL_SEED_START up,
disjoint from these. Re-running with the same arguments tops the store up: (task, seed) pairs
already stored are skipped. Only stores this module created are topped up (their `origin`
attribute says so); pointed at any other store it refuses and writes nothing. Episodes are
appended atomically by this process only, in seed order, so Ctrl-C or a crash leaves a valid
store holding whole episodes.
"""

from __future__ import annotations

import math
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from data.cli_args import parse_bool
from data.dir_lock import DirLock
from data.store import DemoStore, StoreError
from envs.processes import map_in_processes
from envs.progress import EpisodeProgress
from envs.registry import resolve_tasks
from envs.seeds import EVAL_SEED_START  # rollout evaluation seeds start here; demonstrations stay below
from envs.threads import prepare_process

DEFAULTS: dict[str, Any] = {
    "task": "lift", "n_episodes": 100, "out": None, "images": False, "workers": 2, "seed": 0,
    "noise": 0.0, "keep_failed": False, "image_size": 84, "horizon": None,
}
MAX_ATTEMPTS_FACTOR = 3  # give up on a task after this many tries per wanted episode (+10)
# A worker silent this long on one episode (a few seconds to a minute normally) is hung: it is killed and
# its episode fails, like an expert's failed try.
EPISODE_TIMEOUT_S = 600.0

# --- worker side (runs in spawned processes, or in this one with workers=0) -----------------
_CACHE: dict[str, Any] = {}


def _env_and_expert(spec_dict: dict, noise: float):
    """The worker's env and expert for a spec, rebuilt only when the task changes."""
    key = repr((sorted(spec_dict.items()), noise))
    if _CACHE.get("key") != key:
        from envs.experts import make_expert
        from envs.factory import make_env

        if "env" in _CACHE:
            _CACHE["env"].close()
        _CACHE.update(key=key, env=make_env(spec_dict), expert=make_expert(spec_dict, noise=noise))
    return _CACHE["env"], _CACHE["expert"]


def run_episode(spec_dict: dict, seed: int, noise: float = 0.0, states: bool = False) -> dict[str, Any]:
    """Roll the expert out once: {"episode": {key: [L, ...]}, "success", "seed", "action_space"}.

    `states`: also record the flat simulator state before every action (key "states"; robosuite, LIBERO),
    which lets data.convert.verify replay the episode and data.export write robomimic's `states`.
    """
    env, expert = _env_and_expert(spec_dict, noise)
    obs, _ = env.reset(seed=seed)
    expert.reset(env)
    frames: dict[str, list[np.ndarray]] = {k: [] for k in obs}
    if states:
        frames["states"] = []
    actions, success = [], False
    for _ in range(env.env_spec.horizon):
        action = np.asarray(expert.act(env, obs), dtype=np.float32)
        for k, v in obs.items():
            frames[k].append(v)
        if states:
            frames["states"].append(env.get_flat_state())
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        success = bool(info["success"])
        if terminated or truncated:
            break
    episode = {k: np.stack(v) for k, v in frames.items()}
    episode["action"] = np.stack(actions)
    space = env.action_space
    return {"episode": episode, "success": success, "seed": seed,
            "action_space": {"low": space.low.tolist(), "high": space.high.tolist(),
                             "controller": env.env_spec.controller}}


def _job(args: tuple[dict, int, float, bool]) -> dict[str, Any]:
    return run_episode(*args)


# --- main side ---------------------------------------------------------------------------
def _per_task_counts(n_episodes: int, n_tasks: int) -> list[int]:
    base, extra = divmod(n_episodes, n_tasks)
    return [base + (i < extra) for i in range(n_tasks)]


def _open_or_check(out: str, tasks: list[dict]) -> DemoStore | None:
    """The existing store at `out` (for topping up), after checking this module made it for the same tasks."""
    if not os.path.exists(out):
        return None
    store = DemoStore.open(out, mode="r")  # read-only until it is known to be ours
    if not store.generated_by_framework:
        kind = store.origin.get("kind", "not recorded")
        raise StoreError(
            f"{out!r} holds a store data.generate did not make (origin: {kind}); it only tops up stores it "
            "generated itself and never writes into others: choose another out=PATH"
        )
    have = [(t["name"], t.get("env_spec")) for t in store.tasks]
    want = [(t["name"], t["env_spec"]) for t in tasks]
    if have != want:
        raise StoreError(
            f"{out!r} holds a store of other tasks or env settings ({[h[0] for h in have]}); "
            "choose another out=PATH or delete it to regenerate"
        )
    return DemoStore.open(out, mode="a")


def _plan(store: DemoStore | None, counts: list[int], seed: int, attempted: list[set[int]]) -> list[tuple]:
    """(task index, seed) jobs that fill every task up to its count, skipping stored/tried seeds."""
    jobs = []
    for i, want in enumerate(counts):
        stored = set()
        have = 0
        if store is not None:
            mine = store.episode_task == i
            stored = set(store.episode_seed[mine].tolist())
            have = int(mine.sum())
        s = seed
        for _ in range(max(0, want - have)):
            while s in stored or s in attempted[i]:
                s += 1
            jobs.append((i, s))
            attempted[i].add(s)
    return jobs


def _lost_episode(args: tuple, message: str) -> dict[str, Any]:
    """The result of an episode whose worker died or hung: a failed try (the next seed fills in)."""
    return {"lost": message, "success": False, "seed": args[1]}


def _results(jobs, specs, noise, workers, states=False) -> Iterator[tuple[int, dict]]:
    args = [(specs[i], s, noise, states) for i, s in jobs]
    if workers == 0:
        results: Iterator[dict] = map(_job, args)
    else:  # env processes as for rollouts (envs/processes.py): spawned, single-threaded, deaf to Ctrl-C
        results = map_in_processes(_job, args, workers, describe=lambda a: f"{a[0].get('task')} seed {a[1]}",
                                   timeout_s=EPISODE_TIMEOUT_S, on_lost=_lost_episode)
    for (i, _), result in zip(jobs, results):
        yield i, result


def generate(task: str, n_episodes: int, out: str, images: bool = False, workers: int = 2, seed: int = 0,
             noise: float = 0.0, keep_failed: bool = False, image_size: int = 84, horizon: int | None = None,
             progress: bool = True) -> DemoStore:
    """Fill the store at `out` with `n_episodes` expert demonstrations of `task` (see module doc)."""
    if n_episodes <= 0:
        raise ValueError(f"n_episodes must be positive, got {n_episodes}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0: run in this process), got {workers}")
    if not (isinstance(noise, int | float) and math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite number >= 0 (the expert's action noise), got {noise!r}")
    if not 0 <= seed < EVAL_SEED_START:
        raise ValueError(
            f"seed must be in [0, {EVAL_SEED_START}): seeds from {EVAL_SEED_START} on are for evaluation"
        )
    overrides: dict[str, Any] = {"image_size": image_size}
    if horizon is not None:
        overrides["horizon"] = horizon
    tasks = resolve_tasks(task, images=images, **overrides)
    if n_episodes < len(tasks):
        raise ValueError(f"n_episodes={n_episodes} is fewer than the {len(tasks)} tasks of {task!r}")
    entries = [{"name": t["name"], "instruction": t["instruction"], "env_spec": t["env_spec"].to_dict()}
               for t in tasks]
    specs = [e["env_spec"] for e in entries]
    # One writer per store: a second top-up of the same store at once is refused (the lock sits beside the
    # store, whose directory holds only zarr's files).
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    lock = DirLock(store_lock_path(out), what="store (out=...)").acquire()
    try:
        return _fill(task, n_episodes, out, entries, specs, tasks, seed, noise, keep_failed, images, workers,
                     progress)
    finally:
        lock.release()


def store_lock_path(out: str | os.PathLike) -> str:
    path = os.path.abspath(os.fspath(out))
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.lock")


def _fill(task: str, n_episodes: int, out: str, entries: list[dict], specs: list[dict], tasks: list[dict],
          seed: int, noise: float, keep_failed: bool, images: bool, workers: int, progress: bool) -> DemoStore:
    store = _open_or_check(out, entries)
    # Flat states for replay (data.convert.verify): one robosuite task per store (each robosuite task's state
    # has its own size), or LIBERO tasks (a LIBERO suite's scenes share one layout). A store generated before
    # states were recorded is topped up without them.
    simulators = {t["env_spec"].simulator for t in tasks}
    record_states = ((simulators == {"libero"} or (simulators == {"robosuite"} and len(tasks) == 1))
                     and (store is None or not store.keys or "states" in store.keys))
    origin = {"kind": "generated", "task": task, "images": images, "seed": seed, "noise": noise,
              "keep_failed": keep_failed}
    counts = _per_task_counts(n_episodes, len(tasks))
    attempted: list[set[int]] = [set() for _ in tasks]
    bar = EpisodeProgress(sum(counts), f"demos {task}", enabled=progress, done=store.n_episodes if store else 0)
    try:
        while jobs := _plan(store, counts, seed, attempted):
            for i, tried in enumerate(attempted):
                if len(tried) > MAX_ATTEMPTS_FACTOR * counts[i] + 10:
                    raise RuntimeError(f"the {entries[i]['name']} expert failed too often "
                                       f"({len(tried)} tries for {counts[i]} episodes); try keep_failed=true")
                if max(tried, default=seed) >= EVAL_SEED_START:
                    raise RuntimeError("demonstration seeds ran into the evaluation range; lower seed")
            for i, result in _results(jobs, specs, noise, workers, record_states):
                if "lost" in result:
                    print(f"warning: {result['lost']}; that episode is dropped and another seed tried",
                          file=sys.stderr)
                    continue
                if not (result["success"] or keep_failed):
                    continue
                if store is None:
                    store = DemoStore.create(out, tasks=entries, action_space=result["action_space"],
                                             origin=origin)
                try:
                    store.append_episode(result["episode"], task=i, seed=result["seed"],
                                         success=result["success"])
                except StoreError as err:
                    if len(entries) == 1:
                        raise
                    raise StoreError(
                        f"an episode of {entries[i]['name']} does not fit the store of {task!r}: {err}. "
                        "Every task of a multi-task store needs the same observation keys and shapes "
                        "(robosuite tasks differ in object-state; Meta-World tasks all match)"
                    ) from None
                bar.update(success=result["success"])
    except KeyboardInterrupt:
        n = store.n_episodes if store else 0
        print(f"\ninterrupted: {out} keeps {n} complete episodes; re-run to top it up", file=sys.stderr)
        raise
    finally:
        bar.close()
    return DemoStore.open(out, mode="r")


# --- command line ------------------------------------------------------------------------
def _parse_value(key: str, text: str, default: Any) -> Any:
    if key == "horizon" and text.lower() in ("none", "null"):
        return None
    if isinstance(default, bool):
        return parse_bool(key, text)
    if isinstance(default, int) or key == "horizon":
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{key} must be an integer, got {text!r}") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{key} must be a number, got {text!r}") from None
    return text


def parse_args(argv: list[str]) -> dict[str, Any]:
    """key=value arguments -> generate() keyword arguments (unknown keys are an error)."""
    args = dict(DEFAULTS)
    for item in argv:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"arguments are key=value, got {item!r}; keys: {', '.join(DEFAULTS)}")
        if key not in DEFAULTS:
            raise ValueError(f"unknown argument {key!r}; known: {', '.join(DEFAULTS)}")
        args[key] = _parse_value(key, text, DEFAULTS[key])
    if not args["out"]:
        args["out"] = os.path.join("datasets", f"{args['task'].replace(',', '+')}"
                                   f"{'-images' if args['images'] else ''}.zarr")
    return args


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM stops like Ctrl-C: workers cancelled, the store left valid


def main(argv: list[str] | None = None) -> int:
    prepare_process()  # the entry point's thread setting, before anything loads torch (envs/threads.py)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        store = generate(**args)
    except (ValueError, RuntimeError) as err:  # StoreError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    ok = int(store.episode_success.sum())
    print(f"{store.path}: {store.n_episodes} episodes ({ok} successful), {store.n_steps} steps, "
          f"tasks: {', '.join(t['name'] for t in store.tasks)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
