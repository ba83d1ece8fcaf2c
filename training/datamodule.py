"""The LightningDataModule over a demo store: split by episode, normalizer fitting, loaders.

The Dataset and batch sampler it serves are library code in data/dataset.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from data.dataset import DEFAULT_CACHE_MB, DemoDataset, StepBatchSampler, _keep_batch, shape_meta_of
from data.normalize import Normalizer
from data.sampler import split_episodes
from data.store import DemoStore


class StepLoaders:
    """The loaders of a data module whose training batch s is a function of (seed, s) alone, so a resumed run
    sees the batches an uninterrupted one would. The module gives setup(), train_set, val_set, batch sizes,
    num_workers, pin_memory, split_seed and _batch_sampler(start, rank, world)."""

    def train_dataloader(self) -> DataLoader:
        self.setup()
        trainer = getattr(self, "trainer", None)
        # Lightning restores a checkpoint before it asks for loaders: start where the run stopped.
        start = trainer.global_step if trainer is not None else 0
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return DataLoader(self.train_set, batch_sampler=self._batch_sampler(start, rank, world),
                          num_workers=self.num_workers, pin_memory=self.pin_memory, collate_fn=_keep_batch,
                          persistent_workers=self.num_workers > 0, generator=self._loader_generator(start))

    def val_dataloader(self) -> DataLoader | list:
        self.setup()
        if self.val_set is None:
            return []
        return DataLoader(self.val_set, batch_size=self.val_batch_size, shuffle=False,
                          num_workers=self.num_workers, pin_memory=self.pin_memory, collate_fn=_keep_batch,
                          generator=self._loader_generator(0))

    def _loader_generator(self, step: int) -> torch.Generator:
        # Creating a loader iterator draws a worker base seed from the loader's generator; without its
        # own generator that draw comes from the global RNG, and a resumed run would diverge.
        return torch.Generator().manual_seed(self.split_seed * 7_919 + step)


class DemoDataModule(StepLoaders, L.LightningDataModule):
    """Train/val split by episode, in-memory arrays, normalizer fitting, loaders."""

    def __init__(
        self,
        store_path: str,
        obs_keys: Sequence[str],
        n_obs_steps: int,
        horizon: int,
        n_action_steps: int,
        batch_size: int = 256,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        val_ratio: float = 0.1,
        split_seed: int = 0,
        max_train_episodes: int | None = None,
        in_memory: bool = True,
        cache_mb: float = DEFAULT_CACHE_MB,
        lang_dim: int = 0,
    ) -> None:
        super().__init__()
        self.store = DemoStore.open(store_path, "r")
        self.obs_keys = list(obs_keys)
        self.windows = (n_obs_steps, horizon, n_action_steps)
        self.batch_size, self.val_batch_size = batch_size, val_batch_size or batch_size
        self.num_workers, self.pin_memory, self.in_memory = num_workers, pin_memory, in_memory
        self.cache_mb = cache_mb
        self.lang_dim = int(lang_dim)  # width of the policy's instruction embeddings (0: task table)
        self.split_seed = split_seed
        self.train_ids, self.val_ids = split_episodes(
            self.store.n_episodes, val_ratio, split_seed, max_train_episodes
        )
        self._arrays = self.store.load([*self.obs_keys, "action"]) if in_memory else None
        self.train_set: DemoDataset | None = None
        self.val_set: DemoDataset | None = None

    def shape_meta(self) -> dict[str, Any]:
        return shape_meta_of(self.store, self.obs_keys, self.lang_dim)

    def fit_normalizer(self, modes: dict[str, str]) -> Normalizer:
        """Statistics from the training episodes only (validation stays unseen)."""
        ends = self.store.episode_ends
        starts = np.concatenate([[0], ends[:-1]])
        rows = np.concatenate([np.arange(starts[i], ends[i]) for i in self.train_ids])
        low_dim = [k for k, m in modes.items() if m != "image"]
        source = self._arrays if self._arrays is not None else self.store.load(low_dim)
        arrays = {k: source[k][rows] for k in low_dim}
        arrays.update({k: np.zeros((1, 1), np.uint8) for k, m in modes.items() if m == "image"})
        return Normalizer.fit(arrays, modes)

    def _dataset(self, ids: np.ndarray) -> DemoDataset:
        return DemoDataset(self.store, self.obs_keys, *self.windows, episode_ids=ids,
                           in_memory=self.in_memory, arrays=self._arrays,
                           cache_mb=self.cache_mb)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self._dataset(self.train_ids)
            self.val_set = self._dataset(self.val_ids) if len(self.val_ids) else None

    def _batch_sampler(self, start: int, rank: int, world: int) -> StepBatchSampler:
        return StepBatchSampler(len(self.train_set), self.batch_size, self.split_seed, start, rank, world)
