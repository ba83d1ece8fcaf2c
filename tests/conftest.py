"""Shared test fixtures: tiny synthetic stores."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The rendering back end is chosen where the framework chooses it (envs/render.py: Mesa's EGL where it
# works, else OSMesa), once, before any test imports mujoco. choose_backend never raises: state-only
# tests run on a machine without any headless GL.
if "MUJOCO_GL" not in os.environ:
    from envs.render import choose_backend

    os.environ["MUJOCO_GL"] = choose_backend()

from training.hydra_configs import register_policy_defaults  # noqa: E402

register_policy_defaults()  # what train.py does before Hydra composes: tests compose the same configs


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and on a busy CPU two threads spin against each
    other and run many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def synthetic_episode(rng: np.random.Generator, length: int, image: bool = False) -> dict[str, np.ndarray]:
    ep = {
        "action": rng.normal(size=(length, 7)).astype(np.float32),
        "robot0_eef_pos": rng.normal(size=(length, 3)).astype(np.float32),
        "object": rng.normal(size=(length, 10)).astype(np.float32),
    }
    if image:
        ep["agentview_image"] = rng.integers(0, 256, size=(length, 16, 16, 3), dtype=np.uint8)
    return ep


@pytest.fixture
def make_store(tmp_path):
    """make_store(n_episodes, lengths=None, image=False, n_tasks=1) -> DemoStore (appendable)."""
    from data.store import DemoStore

    def _make(n_episodes: int = 4, lengths=None, image: bool = False, n_tasks: int = 1, name: str = "s.zarr"):
        rng = np.random.default_rng(0)
        tasks = [{"name": f"task{i}", "instruction": f"do thing {i}", "env_spec": {}} for i in range(n_tasks)]
        store = DemoStore.create(tmp_path / name, tasks=tasks)
        lengths = lengths or [int(rng.integers(5, 20)) for _ in range(n_episodes)]
        for i, length in enumerate(lengths):
            store.append_episode(synthetic_episode(rng, length, image), task=i % n_tasks, seed=i)
        return store

    return _make
