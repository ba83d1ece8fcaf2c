"""Torch Dataset over a demo store, yielding the batch of docs/architecture.md
(the Lightning DataModule around it is training/datamodule.py).

    {"obs": {key: [B, To, ...]}, "action": [B, T, Da], "action_is_pad": [B, T], "task": [B], "goal": {}}

Language goals are not in the batch: the policy holds the instruction embeddings (its `lang_table`,
saved in checkpoints) and looks them up by task index, in training and in rollouts alike.

Batches are gathered whole (`__getitems__`): one vectorized index per key per batch, which is
what makes in-memory reads fast; zarr-backed reads go whole chunks at a time through data/chunk_cache.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from data.chunk_cache import DEFAULT_CACHE_MB, chunk_readers
from data.sampler import WindowSampler
from data.store import DemoStore, damaged_rows_error, is_image_key


class DemoDataset(Dataset):
    """Windows of the chosen episodes. `in_memory=False` reads batches from zarr, whole chunks at a time,
    through a cache of decoded chunks bounded by `cache_mb` MiB (data/chunk_cache.py); batches are
    bit-identical to the in-memory ones."""

    def __init__(
        self,
        store: DemoStore,
        obs_keys: Sequence[str],
        n_obs_steps: int,
        horizon: int,
        n_action_steps: int,
        episode_ids: Sequence[int] | None = None,
        in_memory: bool = True,
        arrays: dict[str, np.ndarray] | None = None,
        cache_mb: float = DEFAULT_CACHE_MB,
    ) -> None:
        store.require_keys([*obs_keys, "action"])
        if store.n_episodes == 0:
            raise ValueError(f"store {store.path!r} has no episodes; generate some first")
        self.obs_keys = list(obs_keys)
        self.n_obs_steps = n_obs_steps
        self.sampler = WindowSampler(store.episode_ends, n_obs_steps, horizon, n_action_steps, episode_ids)
        keys = [*self.obs_keys, "action"]
        if in_memory:
            arrays = arrays if arrays is not None else store.load(keys)
            self._source = {k: arrays[k] for k in keys}
        else:
            self._source = chunk_readers({k: store.array(k) for k in keys}, cache_mb)
        self._in_memory = in_memory
        self._store_path, self._episode_ends = store.path, np.asarray(store.episode_ends)
        task_of_episode = store.episode_task
        self._window_task = task_of_episode[self.sampler.window_episode].astype(np.int64)

    def __len__(self) -> int:
        return len(self.sampler)

    def _take(self, key: str, rows: np.ndarray) -> np.ndarray:
        if self._in_memory:
            return self._source[key][rows]
        try:
            return self._source[key].take(rows)
        except Exception as err:  # a damaged chunk raises what its codec raises: name the store, key, episode
            raise damaged_rows_error(self._store_path, key, self._episode_ends, int(rows.min()), int(rows.max()),
                                     err, self._source[key].array) from None

    def __getitems__(self, windows: Sequence[int]) -> dict[str, Any]:
        windows = np.asarray(windows, dtype=np.int64)
        rows, is_pad = self.sampler.rows(windows)
        obs_rows = rows[:, : self.n_obs_steps]
        batch: dict[str, Any] = {
            "obs": {k: torch.from_numpy(self._take(k, obs_rows)) for k in self.obs_keys},
            "action": torch.from_numpy(self._take("action", rows)),
            "action_is_pad": torch.from_numpy(is_pad),
            "task": torch.from_numpy(self._window_task[windows]),
            "goal": {},
        }
        return batch

    def __getitem__(self, window: int) -> dict[str, Any]:
        one = self.__getitems__([window])
        return {k: (v[0] if torch.is_tensor(v) else {kk: vv[0] for kk, vv in v.items()}) for k, v in one.items()}


class StepBatchSampler(Sampler[list[int]]):
    """Endless batches where batch number s is a function of (seed, s) alone.

    Epoch e is a permutation drawn from (seed, e); batch s takes its slice. Training is bounded by
    steps, not epochs, and a run resumed at step s (`start_step`) sees exactly the batches the
    uninterrupted run saw, even mid-epoch. With several data-parallel ranks each rank takes its
    own part of one global batch of `batch_size * world_size` windows.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, start_step: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if n < 1:
            raise ValueError("cannot sample batches from an empty dataset")
        self.n, self.batch_size, self.seed, self.start_step = n, batch_size, seed, start_step
        self.rank, self.world_size = rank, world_size
        self._cached_epoch, self._cached_perm = -1, torch.empty(0, dtype=torch.long)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._cached_epoch != epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._cached_perm, self._cached_epoch = torch.randperm(self.n, generator=g), epoch
        return self._cached_perm

    def batch(self, step: int) -> list[int]:
        first = step * self.batch_size * self.world_size + self.rank * self.batch_size
        positions = torch.arange(first, first + self.batch_size)
        epochs = positions // self.n
        out = torch.empty_like(positions)
        for e in epochs.unique().tolist():  # a batch may straddle two epochs (or more, if tiny)
            m = epochs == e
            out[m] = self._permutation(e)[positions[m] % self.n]
        return out.tolist()

    def __iter__(self):
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1


def _keep_batch(batch: dict[str, Any]) -> dict[str, Any]:
    return batch  # __getitems__ already returns a collated batch


def shape_meta_of(store: DemoStore, obs_keys: Sequence[str], lang_dim: int = 0) -> dict[str, Any]:
    """What a policy is built from: per-key shapes and types, action shape, tasks, language width."""
    store.require_keys([*obs_keys, "action"])
    obs = {}
    for k in obs_keys:
        arr = store.array(k)
        kind = "rgb" if is_image_key(k, np.empty((0, *arr.shape[1:]), dtype=arr.dtype)) else "low_dim"
        obs[k] = {"shape": list(arr.shape[1:]), "type": kind}
    return {
        "obs": obs,
        "action": {"shape": list(store.array("action").shape[1:])},
        "n_tasks": len(store.tasks),
        "lang_dim": int(lang_dim),
    }


def default_normalizer_modes(shape_meta: dict[str, Any], action_mode: str = "limits",
                             low_dim_mode: str = "limits") -> dict[str, str]:
    modes = {k: ("image" if v["type"] == "rgb" else low_dim_mode) for k, v in shape_meta["obs"].items()}
    modes["action"] = action_mode
    return modes
