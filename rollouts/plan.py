"""One evaluation worked out before it runs (from the options, the policy and the tasks), and the
numbers it ends with. The runner (rollouts/runner.py) executes the plan.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from envs.spec import EnvSpec
from rollouts.options import RolloutOptions
from rollouts.stats import summarize
from rollouts.video import check_writable_dir


class EnvBuildError(RuntimeError):
    """A task's environment could not be constructed in a worker (bad spec, simulator missing)."""


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
class Running:
    """The runner's record of the episode a worker runs."""

    index: int
    task: int
    seed: int
    t_start: float
    steps: int = 0  # as of the last reply, for the record of an episode whose worker dies
    ret: float = 0.0
    obs: dict[str, np.ndarray] | None = None
    generator: torch.Generator | None = None  # this episode's sampling noise (Plan.episode_noise_seed)


PER_EPISODE_NOISE, SHARED_NOISE = "per-episode", "shared"


@dataclass(frozen=True)
class Plan:
    n_episodes: int
    seeds: list[int]
    horizons: list[int]  # max steps per task
    n_obs_steps: int
    n_action_steps: int
    obs_keys: list[str] | None
    stop_on_success: bool
    video: dict[str, Any] | None  # what a filmed episode's worker needs (dir, fps, source, render_kwargs)
    video_n: int
    device: torch.device
    timeout_s: float
    # set when the policy takes one generator per batch row: each episode's comes from it (episode_generator)
    episode_noise_seed: int | None = None

    def sampling_noise(self) -> str:
        """How the evaluation drew the policy's sampling noise, as eval_info.json records it: "per-episode"
        (each episode its own generator; scores do not depend on the workers) or "shared" (one stream for
        all episodes, the only way for a policy without `generator=`). An eval_info.json without the key
        was made before per-episode noise and drew from the shared stream."""
        return SHARED_NOISE if self.episode_noise_seed is None else PER_EPISODE_NOISE

    def dispatch_order(self) -> list[int]:
        """The order in which workers take the episodes: task by task (episode i belongs to task i mod
        n_tasks), each task's in index order. A worker then keeps one env and rebuilds it only when it moves
        to the next task; a LIBERO env takes about 1 GB, so one env per task in every worker did not fit in
        memory on a 10-task suite. An episode's outcome depends on its index alone (its seed, start state and
        noise), not on when or where it runs."""
        n_tasks = len(self.horizons)
        return sorted(range(self.n_episodes), key=lambda i: (i % n_tasks, i))

    def start(self, i: int, now: float) -> Running:
        seed = self.episode_noise_seed
        generator = None if seed is None else episode_generator(seed, self.seeds[i], self.device)
        return Running(i, i % len(self.horizons), self.seeds[i], now, generator=generator)  # one horizon per task

    def reset_request(self, i: int, tasks: list[dict[str, Any]]) -> dict[str, Any]:
        """The worker's "reset" request for episode i."""
        task = i % len(tasks)
        return {"episode": i, "task": task, "task_name": tasks[task]["name"], "env_spec": tasks[task]["env_spec"],
                "seed": self.seeds[i], "max_steps": self.horizons[task], "stop_on_success": self.stop_on_success,
                # the episode's index within its task: benchmarks with fixed start states (LIBERO) start from it
                "task_episode": i // len(tasks),
                "n_obs_steps": self.n_obs_steps, "obs_keys": self.obs_keys,
                "video": self.video if i < self.video_n else None}


def make_plan(policy: Any, tasks: list[dict[str, Any]], options: RolloutOptions, demo_seeds: Any) -> Plan:
    """Everything an evaluation needs, checked before any episode starts."""
    n_obs, n_act = options.n_obs_steps, options.n_action_steps
    if n_obs is None or n_act is None:
        to, ta = policy_steps(policy)
        n_obs, n_act = n_obs or to, n_act or ta
    if int(n_obs) < 1 or int(n_act) < 1:
        raise ValueError(f"n_obs_steps, n_action_steps must be >= 1, got {n_obs}, {n_act}")
    chunk = (getattr(policy, "config", None) or {}).get("n_action_steps")
    if chunk is not None and int(n_act) > int(chunk):  # the policy returns only its own Ta actions per chunk
        raise ValueError(f"n_action_steps={n_act} exceeds the {chunk} actions the policy predicts per chunk; "
                         f"choose 1..{chunk}")
    obs_keys = list(options.obs_keys) if options.obs_keys is not None else _policy_obs_keys(policy)
    v = options.video
    video = None
    if v.n > 0:
        if v.dir is None:
            raise ValueError("video.n > 0 needs a video.dir")
        video = {"dir": str(check_writable_dir(v.dir)), "fps": float(v.fps), "source": v.source,
                 "render_kwargs": dict(v.render_kwargs)}
    device = torch.device(options.device) if options.device is not None else _policy_device(policy)
    return Plan(n_episodes=int(options.n_episodes), seeds=options.episode_seeds(demo_seeds),
                horizons=_horizons(tasks, options.max_steps), n_obs_steps=int(n_obs), n_action_steps=int(n_act),
                obs_keys=obs_keys, stop_on_success=bool(options.stop_on_success), video=video, video_n=int(v.n),
                device=device, timeout_s=float(options.worker_timeout_s),
                episode_noise_seed=options.sample_seed if _takes_generators(policy) else None)


def episode_generator(sample_seed: int, episode_seed: int, device: torch.device) -> torch.Generator:
    """The generator of one episode's sampling noise, a function of (sample_seed, the episode's seed)
    alone: an episode draws the same noise chunk after chunk whichever worker runs it and whatever
    episodes share its batch, so an evaluation with 2 workers scores as it does with 1."""
    seed = np.random.SeedSequence([int(sample_seed), int(episode_seed)]).generate_state(1, np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(seed))


def _takes_generators(policy: Any) -> bool:
    """Whether `policy.predict_action` takes `generator=` (one per batch row, policies/diffusion.py);
    other policies draw from the global RNG that sampling_rng seeds."""
    try:
        return "generator" in inspect.signature(policy.predict_action).parameters
    except (AttributeError, TypeError, ValueError):
        return False


def policy_steps(policy: Any) -> tuple[int, int]:
    """(n_obs_steps, n_action_steps) from `policy.config`."""
    cfg = getattr(policy, "config", None) or {}
    try:
        return int(cfg["n_obs_steps"]), int(cfg["n_action_steps"])
    except KeyError as err:
        raise ValueError(f"policy.config has no {err.args[0]!r}; set n_obs_steps and n_action_steps in the "
                         "RolloutOptions") from None


def _horizons(tasks: list[dict[str, Any]], max_steps: int | None) -> list[int]:
    out = []
    for t in tasks:
        steps = max_steps if max_steps is not None else t["env_spec"].get("horizon")
        if steps is None or int(steps) <= 0:
            raise ValueError(f"task {t['name']!r}: no positive max_steps (set max_steps or the env_spec's horizon)")
        out.append(int(steps))
    return out


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


@contextlib.contextmanager
def sampling_rng(seed: int | None, device: torch.device) -> Iterator[None]:
    """The policy's sampling noise from `seed` on a forked RNG: the caller's random stream (a training
    run's, for an exact resume) is left as it was, and the same weights get the same score."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(int(seed))
        yield


def record_of(ep: Running, tasks: list[dict[str, Any]], kind: str, reply: dict[str, Any]) -> dict[str, Any]:
    """The per-episode record of eval_info.json."""
    error = None if kind == "obs" else reply["message"]
    return {
        "episode": ep.index, "seed": ep.seed, "task": ep.task, "task_name": tasks[ep.task]["name"],
        "success": bool(reply.get("success")) and error is None, "steps": int(reply.get("steps", ep.steps)),
        "return": float(reply.get("return", ep.ret)), "wall_s": time.perf_counter() - ep.t_start,
        "error": error, "video": reply.get("video"), "cpu_s": float(reply.get("cpu_s", 0.0)),
    }


def metrics_of(records: list[dict[str, Any]], tasks: list[dict[str, Any]], plan: Plan, wall_s: float,
               workers: int) -> dict[str, Any]:
    """`summarize`'s rates (overall and per task) plus the records, throughput and what was run."""
    metrics = summarize(records, [t["name"] for t in tasks])
    env_steps = sum(r["steps"] for r in records)
    metrics.update(
        episodes=records, task_names=[t["name"] for t in tasks], wall_s=wall_s, env_steps=env_steps,
        episodes_per_s=len(records) / wall_s, env_steps_per_s=env_steps / wall_s, workers=workers,
        worker_cpu_s=sum(r["cpu_s"] for r in records), n_obs_steps=plan.n_obs_steps,
        n_action_steps=plan.n_action_steps, stop_on_success=plan.stop_on_success,
        sampling_noise=plan.sampling_noise(),
        video_paths=[r["video"] for r in records if r["video"]],
    )
    return metrics
