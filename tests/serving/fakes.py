"""A tiny MoDE checkpoint for the fake env (obs "state" [4], actions [2]), optionally with a camera, for
the serving tests and benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.normalize import Normalizer
from policies.base import Policy

TINY = {"n_obs_steps": 2, "horizon": 8, "n_action_steps": 4, "width": 32, "n_layers": 2, "n_heads": 2,
        "state_hidden": 32, "num_sampling_steps": 4, "expert_hidden": 32, "router_hidden": 16,
        "image_encoder": {"base_channels": 8, "out_dim": 16}}
TASKS = [{"name": "a", "instruction": "do a", "env_spec": {"horizon": 12, "task_id": 0, "succeed_at": 9}},
         {"name": "b", "instruction": "do b", "env_spec": {"horizon": 12, "task_id": 1}}]


def tiny_policy(cameras: tuple[str, ...] = (), image_size: int = 8, seed: int = 0, **overrides: Any) -> Policy:
    rng = np.random.default_rng(seed)
    arrays = {"action": rng.uniform(-1, 1, size=(100, 2)).astype(np.float32),
              "state": rng.normal(size=(100, 4)).astype(np.float32)}
    modes = {"action": "limits", "state": "gaussian"}
    obs_meta: dict[str, Any] = {"state": {"shape": [4], "type": "low_dim"}}
    for cam in cameras:
        arrays[cam] = np.zeros((1, image_size, image_size, 3), np.uint8)
        modes[cam] = "image"
        obs_meta[cam] = {"shape": [image_size, image_size, 3], "type": "rgb"}
    shape_meta = {"obs": obs_meta, "action": {"shape": [2]}, "n_tasks": len(TASKS), "lang_dim": 0}
    torch.manual_seed(seed)
    policy = Policy.build("mode", {**TINY, **overrides}, shape_meta, Normalizer.fit(arrays, modes))
    torch.nn.init.normal_(policy.net.head.weight, std=0.5)  # the head starts at zero: make the net matter
    return policy.eval()


def write_checkpoint(path: Path, policy: Policy | None = None, tasks: list[dict[str, Any]] = TASKS) -> Path:
    policy = policy or tiny_policy()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"policy": policy.checkpoint_dict(), "global_step": 1,
                "dataset": {"path": "demo.zarr", "tasks": tasks, "demo_seeds": list(range(10))}}, path)
    return path


def observation(policy_or_meta: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """A valid observation for the metadata of a server (or a policy's schema)."""
    rng = np.random.default_rng(seed)
    meta = policy_or_meta
    out = {}
    for key, spec in meta["obs"].items():
        shape = (meta["n_obs_steps"], *spec["shape"])
        out[key] = (rng.integers(0, 256, shape, dtype=np.uint8) if spec["dtype"] == "uint8"
                    else rng.normal(size=shape).astype(np.float32))
    return out
