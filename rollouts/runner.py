"""Parallel rollout evaluation of a policy: spawned env workers, one batched policy call per step.

    metrics = run(policy, tasks, n_episodes=50, workers=2)

- Each worker process builds its envs lazily from picklable task specs (through
  `envs.factory.make_env` unless another factory is given), so this process never imports a
  simulator, and workers are *spawned*: forked OpenGL contexts crash.
- The policy stays here. Whenever envs wait for a decision, the observation histories of all of
  them are stacked to [B, To, ...] and the policy is called once; each env then executes the
  first `n_action_steps` actions of its chunk [B, Ta, Da] in its worker before the next re-plan
  (receding horizon). The start of an episode pads the history by repeating the first observation.
- Episode i uses seed 1_000_000 + i (demonstrations use 0..N-1) and task i % n_tasks, so tasks
  get equal shares. Explicit seeds are checked against the demonstration seeds.
- An env that raises, or a worker that dies or hangs, ends that episode with `error` (a failure,
  reported with its message); the worker is replaced and the run goes on. An env that cannot be
  *built*, or lacks an observation the policy needs, stops the run with EnvBuildError, since
  every later episode would fail the same way.

This module never imports policies: it only calls `policy.predict_action(obs, goal)` with
goal = {"task": [B] int64} and reads `policy.config["n_obs_steps" | "n_action_steps"]` and
(if present) the observation keys of `policy.shape_meta["obs"]`.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_any
from typing import Any

import numpy as np
import torch

from envs.spec import EnvSpec
from rollouts.episode_worker import DEFAULT_ENV_FACTORY
from rollouts.stats import summarize
from rollouts.video import check_writable_dir
from rollouts.worker_handle import WorkerHandle

EVAL_SEED_OFFSET = 1_000_000
# Fresh workers that die before their first reply, in a row: the env itself kills the process
# (e.g. a segfault in the simulator or GL); stop instead of failing every episode the same way.
MAX_STARTUP_CRASHES = 3


class EnvBuildError(RuntimeError):
    """A task's environment could not be constructed in a worker (bad spec, simulator missing)."""


def policy_steps(policy: Any) -> tuple[int, int]:
    """(n_obs_steps, n_action_steps) from `policy.config`."""
    cfg = getattr(policy, "config", None) or {}
    try:
        return int(cfg["n_obs_steps"]), int(cfg["n_action_steps"])
    except KeyError as err:
        raise ValueError(
            f"policy.config has no {err.args[0]!r}; pass n_obs_steps and n_action_steps to run()"
        ) from None


def episode_seeds(n_episodes: int, seeds: Sequence[int] | None = None,
                  demo_seeds: Sequence[int] | None = None, seed_offset: int = EVAL_SEED_OFFSET) -> list[int]:
    """One distinct seed per episode, none of them a demonstration seed."""
    if seeds is None:
        seeds = [seed_offset + i for i in range(n_episodes)]
    seeds = [int(s) for s in seeds]
    if len(seeds) != n_episodes:
        raise ValueError(f"got {len(seeds)} seeds for {n_episodes} episodes; give one seed per episode")
    if len(set(seeds)) != len(seeds):
        raise ValueError("evaluation seeds must be distinct; repeated seeds replay the same initial state")
    if demo_seeds is not None:
        overlap = sorted(set(seeds) & {int(s) for s in demo_seeds})
        if overlap:
            raise ValueError(
                f"evaluation seeds {overlap[:5]}{'...' if len(overlap) > 5 else ''} are demonstration seeds: "
                "evaluating on the training initial states overstates success; choose other seeds "
                "(e.g. a larger seed_offset)"
            )
    return seeds


def as_tasks(tasks: Any) -> list[dict[str, Any]]:
    """[{"name", "instruction", "env_spec"}] from that form, one EnvSpec / spec dict, or a list of them."""
    if isinstance(tasks, EnvSpec | dict):
        tasks = [tasks]
    out = []
    for i, t in enumerate(tasks):
        if isinstance(t, EnvSpec):
            t = {"name": t.task, "env_spec": t.to_dict()}
        elif isinstance(t, dict) and "env_spec" not in t:
            t = {"name": str(t.get("task", f"task{i}")), "env_spec": dict(t)}
        if not isinstance(t, dict) or "env_spec" not in t:
            raise TypeError(f"task {i} must be a dict with an 'env_spec' or an EnvSpec, got {t!r}")
        out.append({"name": str(t.get("name", f"task{i}")), "instruction": t.get("instruction", ""),
                    "env_spec": dict(t["env_spec"])})
    if not out:
        raise ValueError("no tasks to evaluate")
    return out


@dataclass
class _Running:
    index: int
    task: int
    seed: int
    t_start: float
    steps: int = 0  # as of the last reply, for the record of an episode whose worker dies
    ret: float = 0.0
    obs: dict[str, np.ndarray] | None = None


class Runner:
    """Worker processes that outlive one evaluation (a training callback reuses them)."""

    def __init__(self, tasks: Any, workers: int = 2, env_factory: str | Callable[..., Any] | None = None,
                 env_kwargs: dict[str, Any] | None = None, reply_timeout_s: float = 600.0) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.tasks = as_tasks(tasks)
        self.n_workers = int(workers)
        self.env_factory = env_factory or DEFAULT_ENV_FACTORY
        self.env_kwargs = dict(env_kwargs or {})
        self.reply_timeout_s = float(reply_timeout_s)
        self._ctx = mp.get_context("spawn")
        self._workers: list[WorkerHandle] = []
        self._startup_crashes = 0

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        for w in self._workers:
            w.close()
        self._workers = []

    def _spawn(self) -> WorkerHandle:
        return WorkerHandle(self._ctx, self.env_factory, self.env_kwargs)

    def _check_startup(self, w: WorkerHandle, kind: str, reply: dict[str, Any], ep: _Running) -> None:
        if kind != "crash":
            self._startup_crashes = 0
            return
        if w.has_replied:  # it had built its env; this crash is the episode's own
            return
        self._startup_crashes += 1
        if self._startup_crashes >= MAX_STARTUP_CRASHES:
            raise EnvBuildError(
                f"the environment of task {self.tasks[ep.task]['name']!r} cannot be used: "
                f"{self._startup_crashes} fresh workers in a row died before their first reply (last: "
                f"{reply['message']}); check that the simulator runs here (e.g. python -c 'import mujoco')"
            )

    def _max_steps(self, max_steps: int | None) -> list[int]:
        out = []
        for t in self.tasks:
            steps = max_steps if max_steps is not None else t["env_spec"].get("horizon")
            if steps is None or int(steps) <= 0:
                raise ValueError(
                    f"task {t['name']!r}: no positive max_steps (set max_steps or the env_spec's horizon)"
                )
            out.append(int(steps))
        return out

    def run(self, policy: Any, n_episodes: int, *, seeds: Sequence[int] | None = None,
            demo_seeds: Sequence[int] | None = None, seed_offset: int = EVAL_SEED_OFFSET,
            max_steps: int | None = None, stop_on_success: bool = True, video_n: int = 0,
            video_dir: str | os.PathLike | None = None, video_fps: float = 20.0, video_source: str = "render",
            video_render_kwargs: dict[str, Any] | None = None, n_obs_steps: int | None = None,
            n_action_steps: int | None = None, obs_keys: Sequence[str] | None = None,
            device: str | torch.device | None = None, progress: bool = True) -> dict[str, Any]:
        """Roll out `n_episodes` and return the metrics dict (see `summarize` and the keys below).

        obs_keys: the observations passed to the policy (default: the keys of
        `policy.shape_meta["obs"]` when the policy has one, else everything the env gives).
        """
        if int(n_episodes) <= 0:
            raise ValueError(f"n_episodes must be positive, got {n_episodes}")
        n_episodes = int(n_episodes)
        if n_obs_steps is None or n_action_steps is None:
            to, ta = policy_steps(policy)
            n_obs_steps, n_action_steps = n_obs_steps or to, n_action_steps or ta
        if n_obs_steps < 1 or n_action_steps < 1:
            raise ValueError(f"n_obs_steps, n_action_steps must be >= 1, got {n_obs_steps}, {n_action_steps}")
        if obs_keys is None:
            obs_keys = _policy_obs_keys(policy)
        seeds = episode_seeds(n_episodes, seeds, demo_seeds, seed_offset)
        horizons = self._max_steps(max_steps)
        video = None
        if video_n > 0:
            if video_dir is None:
                raise ValueError("video_n > 0 needs a video_dir")
            video = {"dir": str(check_writable_dir(video_dir)), "fps": float(video_fps),
                     "source": video_source, "render_kwargs": dict(video_render_kwargs or {})}
        device = torch.device(device) if device is not None else _policy_device(policy)

        t0 = time.perf_counter()
        while len(self._workers) < min(self.n_workers, n_episodes):
            self._workers.append(self._spawn())
        todo = deque(range(n_episodes))
        records: list[dict[str, Any] | None] = [None] * n_episodes
        bar = _Progress(n_episodes, enabled=progress)
        try:
            while todo or any(w.episode is not None for w in self._workers):
                # 1. idle workers start the next episodes
                for w in self._workers:
                    if w.episode is None and todo:
                        i = todo.popleft()
                        task = i % len(self.tasks)
                        w.episode = _Running(i, task, seeds[i], time.perf_counter())
                        w.send(("reset", {
                            "episode": i, "task": task, "task_name": self.tasks[task]["name"],
                            "env_spec": self.tasks[task]["env_spec"], "seed": seeds[i],
                            "max_steps": horizons[task], "stop_on_success": stop_on_success,
                            "n_obs_steps": n_obs_steps, "obs_keys": obs_keys,
                            "video": video if i < video_n else None,
                        }), self.reply_timeout_s)
                # 2. wait for any reply; take every reply that is in by then. Envs that finish
                # together are batched together; a slow one (filming, building its env) holds
                # back nobody. When the policy is the slower side, all envs are in each time.
                busy = [w for w in self._workers if w.episode is not None]
                timeout = max(0.0, min(w.deadline for w in busy) - time.monotonic())
                wait_any([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=timeout)
                ready: list[WorkerHandle] = []
                for slot, w in enumerate(self._workers):
                    ep = w.episode
                    got = w.poll(self.reply_timeout_s) if ep is not None else None
                    if got is None:
                        continue
                    kind, reply = got
                    self._check_startup(w, kind, reply, ep)
                    if kind == "obs":
                        ep.steps, ep.ret = reply["steps"], reply["return"]
                    if kind == "obs" and not reply["done"]:
                        ep.obs = reply["obs"]
                        ready.append(w)
                        continue
                    if kind == "error" and reply.get("build"):
                        raise EnvBuildError(
                            f"the environment of task {self.tasks[ep.task]['name']!r} cannot be used: "
                            f"{reply['message']}"
                        )
                    records[ep.index] = _record(ep, self.tasks, kind, reply)
                    bar.advance(records[ep.index])
                    w.episode = None
                    if kind == "crash":
                        w.close(timeout_s=0)
                        self._workers[slot] = self._spawn()
                # 3. one batched policy call for the ready envs; each executes its chunk
                if ready:
                    chunks = _predict(policy, ready, device, n_action_steps)
                    for w, chunk in zip(ready, chunks):
                        w.send(("act", chunk), self.reply_timeout_s)
        except BaseException:
            self.close()  # workers may be mid-request; never leave them behind
            raise
        finally:
            bar.stop()
        wall = time.perf_counter() - t0
        done = [r for r in records if r is not None]
        metrics = summarize(done, [t["name"] for t in self.tasks])
        env_steps = sum(r["steps"] for r in done)
        env_cpu = sum(r["cpu_s"] for r in done)
        metrics.update(
            episodes=done, task_names=[t["name"] for t in self.tasks], wall_s=wall, env_steps=env_steps,
            episodes_per_s=len(done) / wall, env_steps_per_s=env_steps / wall, workers=len(self._workers),
            worker_cpu_s=env_cpu,
            n_obs_steps=n_obs_steps, n_action_steps=n_action_steps, stop_on_success=stop_on_success,
            video_paths=[r["video"] for r in done if r["video"]],
        )
        return metrics


def run(policy: Any, tasks: Any, n_episodes: int, workers: int = 2,
        env_factory: str | Callable[..., Any] | None = None, env_kwargs: dict[str, Any] | None = None,
        reply_timeout_s: float = 600.0, **kwargs: Any) -> dict[str, Any]:
    """Evaluate `policy` on `tasks` with fresh worker processes (closed afterwards); see Runner.run."""
    with Runner(tasks, workers=workers, env_factory=env_factory, env_kwargs=env_kwargs,
                reply_timeout_s=reply_timeout_s) as runner:
        return runner.run(policy, n_episodes, **kwargs)


def _policy_obs_keys(policy: Any) -> list[str] | None:
    meta = getattr(policy, "shape_meta", None)
    if isinstance(meta, dict) and isinstance(meta.get("obs"), dict):
        return list(meta["obs"])
    return None


def _policy_device(policy: Any) -> torch.device:
    params = getattr(policy, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return torch.device("cpu")


def _predict(policy: Any, ready: list[WorkerHandle], device: torch.device, n_action_steps: int) -> np.ndarray:
    histories = [w.episode.obs for w in ready]
    obs = {k: torch.from_numpy(np.stack([h[k] for h in histories])).to(device) for k in histories[0]}
    goal = {"task": torch.tensor([w.episode.task for w in ready], dtype=torch.int64, device=device)}
    with torch.inference_mode():
        action = policy.predict_action(obs, goal)
    if action.ndim != 3 or action.shape[0] != len(ready):
        raise ValueError(f"predict_action must return [B={len(ready)}, Ta, Da], got {tuple(action.shape)}")
    return action[:, :n_action_steps].detach().float().cpu().numpy()


def _record(ep: _Running, tasks: list[dict[str, Any]], kind: str, reply: dict[str, Any]) -> dict[str, Any]:
    error = None if kind == "obs" else reply["message"]
    return {
        "episode": ep.index, "seed": ep.seed, "task": ep.task, "task_name": tasks[ep.task]["name"],
        "success": bool(reply.get("success")) and error is None, "steps": int(reply.get("steps", ep.steps)),
        "return": float(reply.get("return", ep.ret)), "wall_s": time.perf_counter() - ep.t_start,
        "error": error, "video": reply.get("video"), "cpu_s": float(reply.get("cpu_s", 0.0)),
    }


class _Progress:
    """A rich progress bar with the running success count (silent when disabled)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._bar = None
        self._n_success = self._n_done = 0
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("rollouts {task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn())
            self._task = self._bar.add_task("", total=total)
            self._bar.start()

    def advance(self, record: dict[str, Any]) -> None:
        self._n_done += 1
        self._n_success += int(record["success"])
        if self._bar is not None:
            self._bar.update(self._task, advance=1, description=f"success {self._n_success}/{self._n_done}")

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
