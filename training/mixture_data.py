"""The LightningDataModule of a mixture (`data.mixture`): several stores, one policy.

Every store must hold the run's observation keys (`task.obs_keys`) and action with the same shapes
(same-shape mixtures: several tasks, several sources of one robot). The split into training and validation
episodes is made per store; one normaliser is fitted on the training rows of all stores together, so every
store is normalised the same way (docs/pretrain-finetune.md says why and what is not done yet).
Validation runs over every store's validation windows, unweighted.
"""

from __future__ import annotations

import os
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from data.dataset import DemoDataset, _keep_batch, shape_meta_of
from data.mixture import MixtureBatchSampler, MixtureDataset, MixtureEntry, MixtureError, parse_mixture
from data.normalize import Normalizer
from data.sampler import split_episodes
from data.store import DemoStore, StoreError


def open_stores(entries: list[MixtureEntry], obs_keys: list[str]) -> list[DemoStore]:
    """Each entry's store, checked to hold the declared keys with the first store's shapes; one line each."""
    stores = []
    for e in entries:
        try:
            store = DemoStore.open(e.dataset, "r")
        except StoreError as err:
            raise MixtureError(f"data.mixture ({e.name}): {err}") from None
        missing = [k for k in [*obs_keys, "action"] if k not in store.keys]
        if missing:
            raise MixtureError(f"data.mixture ({e.name}): store {e.dataset} lacks the declared key(s) {missing} "
                               f"(task.obs_keys); it has {store.keys}")
        if store.n_episodes == 0:
            raise MixtureError(f"data.mixture ({e.name}): store {e.dataset} holds no episodes")
        stores.append(store)
    first = stores[0]
    for e, store in zip(entries[1:], stores[1:]):
        for k in [*obs_keys, "action"]:
            a, b = first.array(k), store.array(k)
            if a.shape[1:] != b.shape[1:] or a.dtype != b.dtype:
                raise MixtureError(f"data.mixture ({e.name}): {k!r} is {b.dtype}{list(b.shape[1:])} but "
                                   f"{a.dtype}{list(a.shape[1:])} in {entries[0].name}; stores of one mixture "
                                   "must share observation and action shapes (different robots are not "
                                   "supported yet)")
    return stores


class MixtureDataModule(L.LightningDataModule):
    """Several stores drawn by weight (data/mixture.py); the surface of DemoDataModule that training uses."""

    def __init__(self, entries: list[MixtureEntry], obs_keys: list[str], n_obs_steps: int, horizon: int,
                 n_action_steps: int, batch_size: int = 256, val_batch_size: int | None = None,
                 num_workers: int = 0, pin_memory: bool = False, val_ratio: float = 0.1, split_seed: int = 0,
                 max_train_episodes: int | None = None, in_memory: bool = True, cache_mb: float = 1024,
                 lang_dim: int = 0) -> None:
        super().__init__()
        self.entries, self.obs_keys = entries, list(obs_keys)
        self.stores = open_stores(entries, self.obs_keys)
        self.windows = (n_obs_steps, horizon, n_action_steps)
        self.batch_size, self.val_batch_size = batch_size, val_batch_size or batch_size
        self.num_workers, self.pin_memory, self.in_memory, self.cache_mb = num_workers, pin_memory, in_memory, cache_mb
        self.split_seed, self.lang_dim = split_seed, int(lang_dim)
        self.splits = [split_episodes(s.n_episodes, val_ratio, split_seed, max_train_episodes) for s in self.stores]
        self.task_offsets = np.concatenate([[0], np.cumsum([len(s.tasks) for s in self.stores])[:-1]]).tolist()
        keys = [*self.obs_keys, "action"]
        self._arrays = [s.load(keys) if in_memory else None for s in self.stores]
        self.train_set: MixtureDataset | None = None
        self.val_set: MixtureDataset | None = None

    # what training reads besides the loaders
    @property
    def train_ids(self) -> np.ndarray:
        return np.concatenate([tr for tr, _ in self.splits])

    @property
    def val_ids(self) -> np.ndarray:
        return np.concatenate([va for _, va in self.splits])

    @property
    def tasks(self) -> list[dict[str, Any]]:
        return [t for s in self.stores for t in s.tasks]

    def label(self) -> str:
        return "the mixture " + ", ".join(f"{e.name} ({e.dataset})" for e in self.entries)

    def shape_meta(self) -> dict[str, Any]:
        meta = shape_meta_of(self.stores[0], self.obs_keys, self.lang_dim)
        meta["n_tasks"] = len(self.tasks)
        return meta

    def fit_normalizer(self, modes: dict[str, str]) -> Normalizer:
        """One normaliser over the training rows of every store (validation episodes stay unseen)."""
        low_dim = [k for k, m in modes.items() if m != "image"]
        arrays: dict[str, list[np.ndarray]] = {k: [] for k in low_dim}
        for store, (train_ids, _), cached in zip(self.stores, self.splits, self._arrays):
            ends = store.episode_ends
            starts = np.concatenate([[0], ends[:-1]])
            rows = np.concatenate([np.arange(starts[i], ends[i]) for i in train_ids])
            source = cached if cached is not None else store.load(low_dim)
            for k in low_dim:
                arrays[k].append(source[k][rows])
        joined: dict[str, np.ndarray] = {k: np.concatenate(v) for k, v in arrays.items()}
        joined.update({k: np.zeros((1, 1), np.uint8) for k, m in modes.items() if m == "image"})
        return Normalizer.fit(joined, modes)

    def dataset_info(self) -> dict[str, Any]:
        """What evaluation needs, saved in every checkpoint: all stores' tasks (global task order), the seeds
        of every demo (evaluation avoids them), and the mixture itself."""
        return {"path": os.path.abspath(self.stores[0].path), "tasks": self.tasks,
                "demo_seeds": sorted({int(x) for s in self.stores for x in s.episode_seed}),
                "obs_keys": self.obs_keys,
                "mixture": [{"name": e.name, "path": os.path.abspath(s.path), "weight": e.weight,
                             "first_task": off, "n_tasks": len(s.tasks)}
                            for e, s, off in zip(self.entries, self.stores, self.task_offsets)]}

    def instructions(self) -> list[str]:
        return [t["instruction"] for t in self.tasks]

    # loaders
    def _dataset(self, which: int) -> MixtureDataset:
        sets = [DemoDataset(s, self.obs_keys, *self.windows, episode_ids=split[which], in_memory=self.in_memory,
                            arrays=arr, cache_mb=self.cache_mb)
                for s, split, arr in zip(self.stores, self.splits, self._arrays) if len(split[which])]
        kept = [k for k, split in enumerate(self.splits) if len(split[which])]
        return MixtureDataset(sets, [self.task_offsets[k] for k in kept], kept)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self._dataset(0)
            self.val_set = self._dataset(1) if len(self.val_ids) else None

    def train_dataloader(self) -> DataLoader:
        self.setup()
        trainer = getattr(self, "trainer", None)
        start = trainer.global_step if trainer is not None else 0  # a resumed run starts where it stopped
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        sampler = MixtureBatchSampler(self.train_set.sizes.tolist(), [e.weight for e in self.entries],
                                      self.batch_size, self.split_seed, start, rank, world)
        return DataLoader(self.train_set, batch_sampler=sampler, num_workers=self.num_workers,
                          pin_memory=self.pin_memory, collate_fn=_keep_batch,
                          persistent_workers=self.num_workers > 0, generator=self._loader_generator(start))

    def val_dataloader(self) -> DataLoader | list:
        self.setup()
        if self.val_set is None:
            return []
        return DataLoader(self.val_set, batch_size=self.val_batch_size, shuffle=False,
                          num_workers=self.num_workers, pin_memory=self.pin_memory, collate_fn=_keep_batch,
                          generator=self._loader_generator(0))

    def _loader_generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.split_seed * 7_919 + step)  # as DemoDataModule: exact resume


def build_mixture_data(cfg: dict[str, Any]) -> tuple[MixtureDataModule, np.ndarray | None]:
    """The mixture's data module and, with task.language, one instruction embedding per task of every store."""
    from training.demos import check_against_env_specs

    entries = parse_mixture(cfg["data"]["mixture"])
    p, d = cfg["policy"], cfg["data"]
    args = dict(batch_size=d["batch_size"], val_batch_size=d["val_batch_size"], num_workers=d["num_workers"],
                pin_memory=d["pin_memory"], val_ratio=d["val_ratio"], split_seed=d["split_seed"],
                max_train_episodes=d["max_train_episodes"], in_memory=d["in_memory"], cache_mb=d["cache_mb"])
    dm = MixtureDataModule(entries, list(cfg["task"]["obs_keys"]), p["n_obs_steps"], p["horizon"],
                           p["n_action_steps"], **args)
    for store in dm.stores:
        check_against_env_specs(store, dm.obs_keys)
    lang = None
    if cfg["task"]["language"]:
        from policies.encoders.language import embed_instructions

        lang = embed_instructions(dm.instructions(), cache_dir=d["cache_dir"])
        dm.lang_dim = int(lang.shape[1])
    return dm, lang
