"""Verify by replay: do a store's recorded actions still succeed in our simulator?

    python -m data.convert.verify STORE [max_episodes=N] [workers=W]

For every episode of a robosuite or LIBERO task in a store that keeps flat simulator states (`states`,
[time, qpos, qvel] per step), the episode is started again from its first state in the env the task's spec
describes (the one evaluation uses), its actions are replayed open-loop, and we report whether the task's
success check fires and how far the objects drift from the recorded trajectory (the largest distance, in
metres, between a replayed and a recorded object position, over steps and objects). A dataset recorded with
another simulator version, controller or model shows up here as failed replays or large drift, before hours
of training. The check reports; it never fails a conversion.

Starting again: a robosuite episode restores states[0]. A generated LIBERO episode is reset from its seed
(the benchmark init state, the seeded object displacement and the settle steps data.generate ran), which also
restores what the flat state does not hold (the gripper's integrated command, the solver's warm start); the
reset must reproduce states[0], else the episode is reported as not replayed.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from data.cli_args import key_values
from data.store import DemoStore, StoreError


@dataclass
class ReplayResult:
    episode: int
    task: str
    steps: int
    success: bool  # the success check fired at some step of the replay
    success_step: int | None  # the first step after which it did (1-based), None if never
    drift_max: float  # metres
    drift_final: float  # metres, at the last recorded state
    note: str = ""  # why an episode was not replayed


def object_slices(sim) -> dict[str, slice]:
    """Flat-state index ranges of each free joint's position (the objects: robosuite arms are fixed)."""
    model = sim.model._model
    out = {}
    for j in range(model.njnt):
        if model.jnt_type[j] == 0:  # mjJNT_FREE: 3 position + 4 quaternion coordinates
            adr = 1 + int(model.jnt_qposadr[j])  # +1: the flat state starts with the time
            out[model.joint(j).name] = slice(adr, adr + 3)
    return out


def replay(env, states: np.ndarray, actions: np.ndarray, model_xml: str | None = None) -> dict[str, Any]:
    """Restore states[0] in a robosuite env, step `actions` open-loop; success and object drift."""
    env.reset_to_state(states[0], model_xml)
    with env.cameras_paused():
        return _open_loop(env.step_physics, env.get_flat_state, object_slices(env.sim), states, actions)


def replay_libero(env, seed: int, states: np.ndarray, actions: np.ndarray) -> dict[str, Any]:
    """Reset a LIBERO env to a generated episode's seed, check it is states[0], step `actions` open-loop."""
    env.reset(seed=seed)
    start = env.get_flat_state()
    if start.shape != states[0].shape:
        raise ValueError(f"states of another model ({states.shape[1]} values, this task's {start.size})")
    gap = float(np.abs(start - states[0]).max())
    if gap > 1e-6:
        raise ValueError(f"seed {seed} starts {gap:.2g} away from the recorded first state")
    return _open_loop(lambda a: env.step(a)[2], env.get_flat_state, env.object_slices(), states, actions)


def _open_loop(step, flat_state, slices: dict[str, slice], states: np.ndarray, actions: np.ndarray) -> dict:
    """Step `actions` (step(action) -> success); the first success and the objects' drift from `states`."""
    first, drifts = None, []
    for t, action in enumerate(actions):
        if step(action) and first is None:
            first = t + 1
        if t + 1 < len(states):
            flat = flat_state()
            drifts.append(max((float(np.linalg.norm(flat[s] - states[t + 1][s])) for s in slices.values()),
                              default=0.0))
    return {"success": first is not None, "success_step": first,
            "drift_max": max(drifts, default=0.0), "drift_final": drifts[-1] if drifts else 0.0}


def replay_spec(spec: dict[str, Any], longest: int) -> dict[str, Any]:
    """The task's spec without cameras (replay needs none) and with room for the longest episode."""
    from envs.spec import EnvSpec

    s = EnvSpec.from_dict(spec)
    return s.replace(cameras=[], state_keys=[], horizon=max(s.horizon, longest + 1)).to_dict()


def _verify_episodes(path: str, episode_ids: list[int]) -> list[ReplayResult]:
    """Replay some episodes of one task (runs in a worker process, or in this one)."""
    from envs.factory import make_env

    store = DemoStore.open(path, "r")
    task_index = int(store.episode_task[episode_ids[0]])
    task = store.tasks[task_index]
    longest = int(store.episode_lengths[episode_ids].max())
    env = make_env(replay_spec(task["env_spec"], longest))
    libero = task["env_spec"]["simulator"] == "libero"
    results = []
    try:
        for i in episode_ids:
            ep = store.get_episode(i, ["states", "action"])
            states = ep["states"].astype(np.float64)
            try:
                if libero:
                    r = replay_libero(env, int(store.episode_seed[i]), states, ep["action"])
                else:
                    r = replay(env, states, ep["action"])
            except ValueError as err:  # states of another model, actions of another size: report, go on
                results.append(ReplayResult(i, task["name"], len(ep["action"]), False, None, float("nan"),
                                            float("nan"), f"not replayed: {err}"))
                continue
            results.append(ReplayResult(episode=i, task=task["name"], steps=len(ep["action"]), **r))
    finally:
        env.close()
    return results


def _job(args: tuple[str, list[int]]) -> list[ReplayResult]:
    return _verify_episodes(*args)


def _worker_init() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"


def verify_store(path: str, max_episodes: int | None = None, workers: int = 0) -> list[ReplayResult]:
    """Replay the store's episodes (the first `max_episodes`); one result per episode, in order."""
    store = DemoStore.open(path, "r")
    if "states" not in store.keys:
        raise StoreError(f"store {path!r} has no 'states' key; verify replays flat simulator states: generate "
                         "it with data.generate (robosuite and LIBERO tasks record them) or convert a source that "
                         "has them")
    n = store.n_episodes if max_episodes is None else min(max_episodes, store.n_episodes)
    results: list[ReplayResult] = []
    jobs: list[tuple[str, list[int]]] = []
    for t, task in enumerate(store.tasks):
        ids = [i for i in range(n) if store.episode_task[i] == t]
        spec = task.get("env_spec") or {}
        if not ids:
            continue
        unseeded = spec.get("simulator") == "libero" and any(store.episode_seed[i] < 0 for i in ids)
        if spec.get("simulator") not in ("robosuite", "libero") or unseeded:
            why = ("no env spec" if not spec else "LIBERO episodes without their seeds" if unseeded
                   else f"a {spec.get('simulator')} task")
            results += [ReplayResult(i, task["name"], int(store.episode_lengths[i]), False, None, float("nan"),
                                     float("nan"), f"skipped: {why} (replay needs robosuite states, or "
                                     "generated LIBERO episodes)") for i in ids]
            continue
        chunks = max(1, min(workers, len(ids)))
        jobs += [(path, ids[k::chunks]) for k in range(chunks)]
    if workers and len(jobs) > 1:
        ctx = mp.get_context("spawn")  # forked children inherit GL state and crash
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as pool:
            for part in pool.map(_job, jobs):
                results += part
    else:
        for job in jobs:
            results += _job(job)
    return sorted(results, key=lambda r: r.episode)


def summary(results: list[ReplayResult]) -> dict[str, Any]:
    done = [r for r in results if not r.note]
    drift = np.array([r.drift_max for r in done]) if done else np.zeros(0)
    return {"episodes": len(results), "replayed": len(done), "success": sum(r.success for r in done),
            "success_rate": (sum(r.success for r in done) / len(done)) if done else None,
            "drift_max_median_m": float(np.median(drift)) if done else None,
            "drift_max_worst_m": float(drift.max()) if done else None,
            "skipped": len(results) - len(done)}


def format_report(results: list[ReplayResult]) -> str:
    lines = [f"{'episode':>7}  {'task':<20} {'steps':>5}  {'replay':<12} {'drift max':>10} {'final':>9}"]
    for r in results:
        if r.note:
            lines.append(f"{r.episode:>7}  {r.task:<20} {r.steps:>5}  {r.note}")
            continue
        outcome = f"success@{r.success_step}" if r.success else "FAILED"
        lines.append(f"{r.episode:>7}  {r.task:<20} {r.steps:>5}  {outcome:<12} {r.drift_max * 1000:>8.1f}mm "
                     f"{r.drift_final * 1000:>7.1f}mm")
    s = summary(results)
    if s["replayed"]:
        lines.append(f"replayed {s['replayed']} episode(s): {s['success']} reach success "
                     f"({s['success_rate']:.0%}); object drift: median {s['drift_max_median_m'] * 1000:.1f} mm, "
                     f"worst {s['drift_max_worst_m'] * 1000:.1f} mm")
    if s["skipped"]:
        lines.append(f"{s['skipped']} episode(s) not replayed (see notes)")
    return "\n".join(lines)


def as_dicts(results: list[ReplayResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    usage = "usage: python -m data.convert.verify STORE [max_episodes=N] [workers=W]"
    if not argv or argv[0] in ("-h", "--help"):
        print(usage, file=sys.stderr)
        return 2
    path, opts = argv[0], {"max_episodes": None, "workers": 0}
    try:
        given = key_values(argv[1:], tuple(opts), usage)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for key, text in given.items():
        if not text.isdigit():
            print(f"error: bad argument {key}={text!r}; {usage}", file=sys.stderr)
            return 2
        opts[key] = int(text)
    try:
        results = verify_store(path, **opts)
    except StoreError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
