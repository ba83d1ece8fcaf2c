"""The LightningDataModule of a mixture (`data.mixture`): several stores, one policy.

`task.obs_keys` lists every observation key of the run (state keys and camera slots); a store's entry may
list the subset it provides (`obs_keys`), by default all of them. A key has one shape in every store that
has it, and every key is provided by some store.

- Same keys and action dimension in every store (several tasks or sources of one robot): one policy as for
  one store; one normaliser fitted on the training rows of all stores together.
- Otherwise (several robots): per-embodiment layers around one shared transformer
  (policies/multi_embodiment.py), one normaliser per store under "<store>/<key>", and batches padded to
  every key and the widest action, with `obs_is_pad` flagging the keys a row's store lacks.

The split into training and validation episodes is made per store; validation runs over every store's
validation windows, unweighted.
"""

from __future__ import annotations

import os
from typing import Any

import lightning as L
import numpy as np

from data.dataset import DemoDataset, shape_meta_of
from data.mixture import MixtureBatchSampler, MixtureDataset, MixtureEntry, MixtureError, Padding, parse_mixture
from data.normalize import Normalizer
from data.sampler import split_episodes
from data.store import DemoStore, StoreError
from training.datamodule import StepLoaders

SEVERAL_ROBOT_POLICIES = ("mode", "dit")  # transformer policies: policies/multi_embodiment.py wraps them


def store_keys(entry: MixtureEntry, declared: list[str]) -> list[str]:
    """The observation keys a store provides: its entry's obs_keys, else all of the run's (task.obs_keys)."""
    if entry.obs_keys is None:
        return list(declared)
    extra = [k for k in entry.obs_keys if k not in declared]
    if extra:
        raise MixtureError(f"data.mixture ({entry.name}): obs_keys {extra} are not in task.obs_keys {declared}; "
                           "task.obs_keys lists every key (camera slot) of the run")
    return list(entry.obs_keys)


def open_stores(entries: list[MixtureEntry], declared: list[str]) -> list[DemoStore]:
    """Each entry's store, checked to hold the keys it declares, each key with one shape across the stores
    that have it, and every key of the run provided by some store; one line each."""
    stores = []
    for e in entries:
        try:
            store = DemoStore.open(e.dataset, "r")
        except StoreError as err:
            raise MixtureError(f"data.mixture ({e.name}): {err}") from None
        missing = [k for k in [*store_keys(e, declared), "action"] if k not in store.keys]
        if missing:
            raise MixtureError(f"data.mixture ({e.name}): store {e.dataset} lacks the declared key(s) {missing} "
                               f"(its obs_keys, else task.obs_keys); it has {store.keys}")
        if store.n_episodes == 0:
            raise MixtureError(f"data.mixture ({e.name}): store {e.dataset} holds no episodes")
        stores.append(store)
    for key in declared:
        having = [(e, s) for e, s in zip(entries, stores) if key in store_keys(e, declared)]
        if not having:
            raise MixtureError(f"task.obs_keys: {key!r} is provided by no store of the mixture; drop it or list "
                               "it in the obs_keys of a store that has it")
        e0, shape0 = having[0][0], having[0][1].array(key)
        for e, s in having[1:]:
            a = s.array(key)
            if a.shape[1:] != shape0.shape[1:] or a.dtype != shape0.dtype:
                raise MixtureError(f"data.mixture ({e.name}): {key!r} is {a.dtype}{list(a.shape[1:])} but "
                                   f"{shape0.dtype}{list(shape0.shape[1:])} in {e0.name}; a key (a camera slot) "
                                   "has one shape in every store that has it")
    for e, s in zip(entries, stores):
        a = s.array("action")
        if a.ndim != 2:
            raise MixtureError(f"data.mixture ({e.name}): action must be [N, Da], got {list(a.shape)}")
    return stores


class MixtureDataModule(StepLoaders, L.LightningDataModule):
    """Several stores drawn by weight (data/mixture.py); the surface of DemoDataModule that training uses."""

    def __init__(self, entries: list[MixtureEntry], obs_keys: list[str], n_obs_steps: int, horizon: int,
                 n_action_steps: int, batch_size: int = 256, val_batch_size: int | None = None,
                 num_workers: int = 0, pin_memory: bool = False, val_ratio: float = 0.1, split_seed: int = 0,
                 max_train_episodes: int | None = None, in_memory: bool = True, cache_mb: float = 1024,
                 lang_dim: int = 0) -> None:
        super().__init__()
        self.entries, self.obs_keys = entries, list(obs_keys)
        self.stores = open_stores(entries, self.obs_keys)
        self.keys_of = [store_keys(e, self.obs_keys) for e in entries]
        self.action_dims = [int(s.array("action").shape[1]) for s in self.stores]
        # Same keys and action dimension everywhere: one policy as for one store. Otherwise several robots:
        # per-embodiment layers (policies/multi_embodiment.py), per-store normalisers, padded batches.
        self.several_robots = any(k != self.obs_keys for k in self.keys_of) or len(set(self.action_dims)) > 1
        self.windows = (n_obs_steps, horizon, n_action_steps)
        self.batch_size, self.val_batch_size = batch_size, val_batch_size or batch_size
        self.num_workers, self.pin_memory, self.in_memory, self.cache_mb = num_workers, pin_memory, in_memory, cache_mb
        self.split_seed, self.lang_dim = split_seed, int(lang_dim)
        self.splits = [split_episodes(s.n_episodes, val_ratio, split_seed, max_train_episodes) for s in self.stores]
        self.task_offsets = np.concatenate([[0], np.cumsum([len(s.tasks) for s in self.stores])[:-1]]).tolist()
        self._arrays = [s.load([*keys, "action"]) if in_memory else None for s, keys in zip(self.stores, self.keys_of)]
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
        """As for one store; with several robots also "embodiments": per store (by name) its obs keys, action
        dimension and task range, and "action" the widest dimension (a padded batch's)."""
        obs = {}
        for store, keys in zip(self.stores, self.keys_of):
            obs.update({k: v for k, v in shape_meta_of(store, keys, self.lang_dim)["obs"].items() if k not in obs})
        meta = {"obs": {k: obs[k] for k in self.obs_keys}, "action": {"shape": [max(self.action_dims)]},
                "n_tasks": len(self.tasks), "lang_dim": int(self.lang_dim)}
        if self.several_robots:
            meta["embodiments"] = {
                e.name: {"obs_keys": keys, "action_dim": da, "first_task": int(off), "n_tasks": len(s.tasks)}
                for e, s, keys, da, off in zip(self.entries, self.stores, self.keys_of, self.action_dims,
                                               self.task_offsets)}
        return meta

    def fit_normalizer(self, modes: dict[str, str]) -> Normalizer:
        """Statistics from the training rows (validation episodes stay unseen): one normaliser over every
        store's rows, or with several robots one set per store, under "<store name>/<key>"."""
        per_store: list[dict[str, np.ndarray]] = []
        for store, keys, (train_ids, _), cached in zip(self.stores, self.keys_of, self.splits, self._arrays):
            ends = store.episode_ends
            starts = np.concatenate([[0], ends[:-1]])
            rows = np.concatenate([np.arange(starts[i], ends[i]) for i in train_ids])
            low_dim = [k for k in [*keys, "action"] if modes[k] != "image"]
            source = cached if cached is not None else store.load(low_dim)
            per_store.append({k: source[k][rows] for k in low_dim})
        images = {k: np.zeros((1, 1), np.uint8) for k, m in modes.items() if m == "image"}
        if not self.several_robots:
            joined = {k: np.concatenate([a[k] for a in per_store]) for k in per_store[0]}
            return Normalizer.fit({**joined, **images}, modes)
        arrays = {f"{e.name}/{k}": v for e, a in zip(self.entries, per_store) for k, v in a.items()}
        store_modes = {f"{e.name}/{k}": modes[k] for e, a in zip(self.entries, per_store) for k in a}
        return Normalizer.fit({**arrays, **images}, {**store_modes, **{k: "image" for k in images}})

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
        kept = [k for k, split in enumerate(self.splits) if len(split[which])]
        sets = [DemoDataset(self.stores[k], self.keys_of[k], *self.windows, episode_ids=self.splits[k][which],
                            in_memory=self.in_memory, arrays=self._arrays[k], cache_mb=self.cache_mb) for k in kept]
        padding = None
        if self.several_robots:
            meta = self.shape_meta()["obs"]
            dtypes = {k: str(next(s.array(k).dtype for s, keys in zip(self.stores, self.keys_of) if k in keys))
                      for k in self.obs_keys}
            padding = Padding({k: (tuple(meta[k]["shape"]), dtypes[k]) for k in self.obs_keys}, max(self.action_dims))
        return MixtureDataset(sets, [self.task_offsets[k] for k in kept], kept, padding)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self._dataset(0)
            self.val_set = self._dataset(1) if len(self.val_ids) else None

    def _batch_sampler(self, start: int, rank: int, world: int) -> MixtureBatchSampler:
        return MixtureBatchSampler(self.train_set.sizes.tolist(), [e.weight for e in self.entries],
                                   self.batch_size, self.split_seed, start, rank, world)


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
    if dm.several_robots and cfg["policy"]["name"] not in SEVERAL_ROBOT_POLICIES:
        raise MixtureError(f"the stores of data.mixture differ in observation keys or action dimension (several "
                           f"robots), which needs per-embodiment layers around a transformer: use policy=mode or "
                           f"policy=dit, not {cfg['policy']['name']}")
    if dm.several_robots and cfg["rollout_eval"]["every_n_steps"]:
        raise MixtureError("rollout_eval during training runs every task with one policy, but this mixture has "
                           "several robots; set rollout_eval.every_n_steps=0 and evaluate each robot after "
                           "training: python eval_rollouts.py checkpoint=RUN_DIR store=NAME")
    for store, keys in zip(dm.stores, dm.keys_of):
        check_against_env_specs(store, keys)
    lang = None
    if cfg["task"]["language"]:
        from policies.encoders.language import embed_instructions

        lang = embed_instructions(dm.instructions(), cache_dir=d["cache_dir"])
        dm.lang_dim = int(lang.shape[1])
    return dm, lang
