"""How to run a rollout evaluation, as one value passed from the caller (eval_rollouts.py's config, the
training callback, a notebook) through the runner:

    options = RolloutOptions(n_episodes=50, workers=2, video=VideoOptions(n=4, dir="videos"))
    metrics = run(policy, tasks, options, demo_seeds=store.episode_seed)

Values are checked when the options are made, so a bad one fails before any worker starts.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from envs.seeds import EVAL_SEED_START

# The fields that shape the worker processes; a Runner keeps the ones it was made with.
PROCESS_FIELDS = ("workers", "env_factory", "env_kwargs")


@dataclass(frozen=True)
class VideoOptions:
    n: int = 0  # film the first n episodes (0: no videos)
    dir: str | os.PathLike | None = None  # where the mp4 files go; needed when n > 0
    fps: float = 20.0
    source: str = "render"  # "render": env.render(**render_kwargs); else an image observation key
    render_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if int(self.n) < 0:
            raise ValueError(f"video.n must be >= 0 (0: no videos), got {self.n}")
        if float(self.fps) <= 0:
            raise ValueError(f"video.fps must be positive, got {self.fps}")


@dataclass(frozen=True)
class RolloutOptions:
    n_episodes: int  # spread evenly over the tasks: episode i runs task i % n_tasks
    # --- the worker processes (fixed for the life of a Runner) ---
    workers: int = 2  # spawned env processes; the policy runs batched in the calling process
    env_factory: str | Callable[..., Any] | None = None  # "module:function" building an env; None: envs.factory
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments of the factory
    # --- the episodes ---
    seeds: Sequence[int] | None = None  # one per episode; None: seed_offset + i
    seed_offset: int | None = None  # None: envs.seeds.EVAL_SEED_START, above every demonstration seed
    max_steps: int | None = None  # per episode; None: each task's env_spec horizon
    stop_on_success: bool = True  # end an episode at its first success
    video: VideoOptions = field(default_factory=VideoOptions)
    worker_timeout_s: float = 600.0  # a worker silent this long (hung simulator) is replaced
    progress: bool = True  # a live bar at a terminal, else a line every 10 s (envs/progress.py)
    # --- the policy side (None: what the policy says) ---
    sample_seed: int | None = 0  # seed of the sampling noise: with each episode's seed, that episode's generator
    # (policies taking generator=), else the global RNG on a forked stream; None: the caller's RNG
    n_obs_steps: int | None = None  # None: policy.config["n_obs_steps"]
    n_action_steps: int | None = None  # None: policy.config["n_action_steps"]
    obs_keys: Sequence[str] | None = None  # None: policy.shape_meta["obs"] keys, else all the env gives
    device: str | None = None  # where observations go; None: the policy's parameters' device
    # --- inference delay in env time (rollouts/latency.py) ---
    latency_ms: float = 0.0  # inference + network delay: the env executes queued actions meanwhile
    transition: str | None = None  # switch | blend | rtc: how a late chunk takes over; None: plain re-planning
    control_rate_hz: float = 20.0  # env steps per second, to turn latency_ms into steps

    def __post_init__(self) -> None:
        if isinstance(self.video, Mapping):  # from a config: video: {n: 4, fps: 20, ...}
            object.__setattr__(self, "video", VideoOptions(**self.video))
        if int(self.n_episodes) <= 0:
            raise ValueError(f"n_episodes must be positive, got {self.n_episodes}")
        if int(self.workers) < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.max_steps is not None and int(self.max_steps) <= 0:
            raise ValueError(f"max_steps must be positive (or null: each task's horizon), got {self.max_steps}")
        if float(self.worker_timeout_s) <= 0:
            raise ValueError(f"worker_timeout_s must be positive, got {self.worker_timeout_s}")
        for name in ("n_obs_steps", "n_action_steps"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if float(self.latency_ms) < 0 or float(self.control_rate_hz) <= 0:
            raise ValueError("latency_ms must be >= 0 and control_rate_hz positive")
        if float(self.latency_ms) > 0 and self.transition is None:
            raise ValueError("latency_ms > 0 needs a transition: switch, blend or rtc")
        if self.transition is not None and self.transition not in ("switch", "blend", "rtc"):
            raise ValueError(f"transition={self.transition!r}: choose switch, blend or rtc")
        self.episode_seeds()  # the seeds' own checks (count, distinct), before any worker starts

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], **overrides: Any) -> RolloutOptions:
        """From a config mapping with these field names (conf/eval.yaml); other keys are not ours."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in cfg.items() if k in names}
        values.update(overrides)
        if values.get("env_kwargs") is None:
            values.pop("env_kwargs", None)
        return cls(**values)

    def replace(self, **changes: Any) -> RolloutOptions:
        """A copy with `changes`; `video=` may be a dict of VideoOptions fields to change."""
        if isinstance(changes.get("video"), Mapping):
            changes["video"] = dataclasses.replace(self.video, **changes["video"])
        return dataclasses.replace(self, **changes)

    def processes(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in PROCESS_FIELDS}

    def episode_seeds(self, demo_seeds: Sequence[int] | None = None) -> list[int]:
        """One distinct seed per episode, none of them a demonstration seed."""
        n = int(self.n_episodes)
        if self.seeds is None:
            start = EVAL_SEED_START if self.seed_offset is None else int(self.seed_offset)
            return _not_demo_seeds([start + i for i in range(n)], demo_seeds)
        seeds = [int(s) for s in self.seeds]
        if len(seeds) != n:
            raise ValueError(f"got {len(seeds)} seeds for {n} episodes; give one seed per episode")
        if len(set(seeds)) != len(seeds):
            raise ValueError("evaluation seeds must be distinct; repeated seeds replay the same initial state")
        return _not_demo_seeds(seeds, demo_seeds)


def _not_demo_seeds(seeds: list[int], demo_seeds: Sequence[int] | None) -> list[int]:
    if demo_seeds is None:
        return seeds
    overlap = sorted(set(seeds) & {int(s) for s in demo_seeds})
    if overlap:
        raise ValueError(
            f"evaluation seeds {overlap[:5]}{'...' if len(overlap) > 5 else ''} are demonstration seeds: "
            "evaluating on the training initial states overstates success; choose other seeds "
            "(e.g. a larger seed_offset)"
        )
    return seeds
