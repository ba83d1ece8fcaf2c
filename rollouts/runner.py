"""Parallel rollout evaluation of a policy: spawned env workers, one batched policy call per step.

    metrics = run(policy, tasks, RolloutOptions(n_episodes=50, workers=2), demo_seeds=...)

- Each worker process builds its envs lazily from picklable task specs (through
  `envs.factory.make_env` unless another factory is given), so this process never imports a
  simulator; workers are started like every env worker (envs/processes.py: spawned, single-threaded).
- The policy stays here. Whenever envs wait for a decision, the observation histories of all of
  them are stacked to [B, To, ...] and the policy is called once; each env then executes the
  first `n_action_steps` actions of its chunk [B, Ta, Da] in its worker before the next re-plan
  (receding horizon). The start of an episode pads the history by repeating the first observation.
- Episode i uses seed EVAL_SEED_START + i (envs/seeds.py; demonstrations stay below it) and task
  i % n_tasks, so tasks get equal shares. Seeds are checked against the demonstration seeds.
- An env that raises, or a worker that dies or hangs, ends that episode with `error` (a failure,
  reported with its message); the worker is replaced and the run goes on. An env that cannot be
  *built*, or lacks an observation the policy needs, stops the run with EnvBuildError, since
  every later episode would fail the same way. An interrupted run (Ctrl-C) closes its workers.

- Sampling noise: a policy whose `predict_action` takes `generator=` (every diffusion policy here) gets
  one generator per row, each episode's own, seeded from (options.sample_seed, the episode's seed)
  (rollouts.plan.episode_generator): an episode's score does not depend on the number of workers or on
  which episodes happened to share its batches. Other policies draw from the global RNG, seeded once
  per evaluation on a forked stream.

This module never imports policies: it only calls `policy.predict_action(obs, goal[, generator])` with
goal = {"task": [B] int64} and reads `policy.config["n_obs_steps" | "n_action_steps"]` and
(if present) the observation keys of `policy.shape_meta["obs"]`.
"""

from __future__ import annotations

import time
from collections import deque
from multiprocessing.connection import wait as wait_any
from typing import Any

import numpy as np
import torch

from envs.processes import INTERRUPTED_CLOSE_S, close_all
from envs.progress import EpisodeProgress
from envs.threads import threads_beside_workers
from rollouts.episode_worker import DEFAULT_ENV_FACTORY
from rollouts.latency import LatencySim
from rollouts.options import RolloutOptions
from rollouts.plan import EnvBuildError, Plan, as_tasks, make_plan, metrics_of, record_of, sampling_rng
from rollouts.worker_handle import WorkerHandle

__all__ = ["EnvBuildError", "Runner", "run"]

# Fresh workers that die before their first reply, in a row: the env itself kills the process
# (e.g. a segfault in the simulator or GL); stop instead of failing every episode the same way.
MAX_STARTUP_CRASHES = 3


class Runner:
    """Worker processes that outlive one evaluation (a training callback reuses them).

    `options` fixes the processes (workers, env_factory, env_kwargs) for the Runner's life and are the
    default options of `run`.
    """

    def __init__(self, tasks: Any, options: RolloutOptions) -> None:
        self.tasks = as_tasks(tasks)
        self.options = options
        self._workers: list[WorkerHandle] = []
        self._startup_crashes = 0

    @property
    def n_workers(self) -> int:
        return int(self.options.workers)

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self, timeout_s: float = 10.0) -> None:
        close_all([w.process for w in self._workers], timeout_s)
        self._workers = []

    def run(self, policy: Any, options: RolloutOptions | None = None,
            demo_seeds: Any = None) -> dict[str, Any]:
        """Roll out `options.n_episodes` (default: the Runner's options) and return the metrics dict
        (see `rollouts.plan.metrics_of`). `demo_seeds`: the training data's seeds, never evaluated on."""
        options = options or self.options
        if options.processes() != self.options.processes():
            raise ValueError(f"this Runner's workers were started with {self.options.processes()}; "
                             "options that change them need a new Runner")
        plan = make_plan(policy, self.tasks, options, demo_seeds)
        t0 = time.perf_counter()
        bar = EpisodeProgress(plan.n_episodes, "rollouts", enabled=options.progress)
        sim = None if options.transition is None else LatencySim.from_options(
            options.latency_ms, options.control_rate_hz, options.transition, plan.n_action_steps)
        try:
            # each worker steps its physics on a core of its own while the policy thinks (envs/threads.py)
            with sampling_rng(options.sample_seed, plan.device), \
                    threads_beside_workers(min(self.n_workers, plan.n_episodes)):
                records = self._episodes(policy, plan, bar, sim)
        except BaseException:
            self.close(INTERRUPTED_CLOSE_S)  # workers may be mid-request; never leave them behind
            raise
        finally:
            bar.close()
        metrics = metrics_of(records, self.tasks, plan, time.perf_counter() - t0, len(self._workers))
        if sim is not None:
            metrics["transition"] = sim.summary()
        return metrics

    # --- one evaluation ---------------------------------------------------------------------------
    def _episodes(self, policy: Any, plan: Plan, bar: EpisodeProgress, sim: LatencySim | None = None,
                  ) -> list[dict[str, Any]]:
        while len(self._workers) < min(self.n_workers, plan.n_episodes):
            self._workers.append(self._spawn())
        todo = deque(plan.dispatch_order())
        records: list[dict[str, Any] | None] = [None] * plan.n_episodes
        while todo or any(w.episode is not None for w in self._workers):
            self._start_episodes(todo, plan)  # 1. idle workers start the next episodes
            ready = self._collect(plan, records, bar)  # 2. replies; finished episodes recorded
            if ready:  # 3. one batched policy call for the ready envs; each executes its chunk
                extra = {} if sim is None else sim.policy_kwargs([w.episode.index for w in ready],
                                                                  _action_dim(policy), plan.device)
                chunks = _predict(policy, ready, plan, extra, cut=sim is None)
                for w, chunk in zip(ready, chunks):
                    actions = chunk if sim is None else sim.actions(w.episode.index, chunk)
                    w.send(("act", actions), plan.timeout_s)
        return [r for r in records if r is not None]

    def _start_episodes(self, todo: deque[int], plan: Plan) -> None:
        for w in self._workers:
            if w.episode is None and todo:
                i = todo.popleft()
                w.episode = plan.start(i, time.perf_counter())
                w.send(("reset", plan.reset_request(i, self.tasks)), plan.timeout_s)

    def _collect(self, plan: Plan, records: list[dict[str, Any] | None], bar: EpisodeProgress) -> list[WorkerHandle]:
        """Wait for any reply, then take every reply that is in by then. Envs that finish together are
        batched together; a slow one (filming, building its env) holds back nobody. When the policy is
        the slower side, all envs are in each time."""
        busy = [w for w in self._workers if w.episode is not None]
        timeout = max(0.0, min(w.deadline for w in busy) - time.monotonic())
        wait_any([w.conn for w in busy] + [w.sentinel for w in busy], timeout=timeout)
        ready: list[WorkerHandle] = []
        for slot, w in enumerate(self._workers):
            ep = w.episode
            got = w.poll(plan.timeout_s) if ep is not None else None
            if got is None:
                continue
            kind, reply = got
            self._check_startup(w, kind, reply, ep.task)
            if kind == "obs":
                ep.steps, ep.ret = reply["steps"], reply["return"]
                if not reply["done"]:
                    ep.obs = reply["obs"]
                    ready.append(w)
                    continue
            if kind == "error" and reply.get("build"):
                raise EnvBuildError(f"the environment of task {self.tasks[ep.task]['name']!r} cannot be used: "
                                    f"{reply['message']}")
            records[ep.index] = record_of(ep, self.tasks, kind, reply)
            bar.update(success=bool(records[ep.index]["success"]))
            w.episode = None
            if kind == "crash":
                w.close(timeout_s=0)
                self._workers[slot] = self._spawn()
        return ready

    # --- workers ----------------------------------------------------------------------------------
    def _spawn(self) -> WorkerHandle:
        return WorkerHandle(self.options.env_factory or DEFAULT_ENV_FACTORY, dict(self.options.env_kwargs))

    def _check_startup(self, w: WorkerHandle, kind: str, reply: dict[str, Any], task: int) -> None:
        if kind != "crash":
            self._startup_crashes = 0
            return
        if w.has_replied:  # it had built its env; this crash is the episode's own
            return
        self._startup_crashes += 1
        if self._startup_crashes >= MAX_STARTUP_CRASHES:
            raise EnvBuildError(
                f"the environment of task {self.tasks[task]['name']!r} cannot be used: "
                f"{self._startup_crashes} fresh workers in a row died before their first reply (last: "
                f"{reply['message']}); check that the simulator runs here (e.g. python -c 'import mujoco')"
            )


def run(policy: Any, tasks: Any, options: RolloutOptions, demo_seeds: Any = None) -> dict[str, Any]:
    """Evaluate `policy` on `tasks` with fresh worker processes (closed afterwards); see Runner.run."""
    with Runner(tasks, options) as runner:
        return runner.run(policy, demo_seeds=demo_seeds)


def _action_dim(policy: Any) -> int:
    return int(policy.shape_meta["action"]["shape"][0])


def _predict(policy: Any, ready: list[WorkerHandle], plan: Plan, extra: dict[str, Any] | None = None,
             cut: bool = True) -> np.ndarray:
    """[B, Ta, Da]: the first plan.n_action_steps actions of each chunk, or (cut=False: the delay simulation,
    whose old chunk keeps going past the execution horizon) the whole chunk."""
    histories = [w.episode.obs for w in ready]
    obs = {k: torch.from_numpy(np.stack([h[k] for h in histories])).to(plan.device) for k in histories[0]}
    goal = {"task": torch.tensor([w.episode.task for w in ready], dtype=torch.int64, device=plan.device)}
    noise = {"generator": [w.episode.generator for w in ready]} if plan.episode_noise_seed is not None else {}
    with torch.inference_mode():
        action = policy.predict_action(obs, goal, **noise, **(extra or {}))
    if action.ndim != 3 or action.shape[0] != len(ready):
        raise ValueError(f"predict_action must return [B={len(ready)}, Ta, Da], got {tuple(action.shape)}")
    return action[:, :plan.n_action_steps if cut else None].detach().float().cpu().numpy()
