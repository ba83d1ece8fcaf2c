"""Training on several demo stores at once: the mixture's entries, its batch sampler and its Dataset.

    entries = parse_mixture([{"name": "lift", "dataset": "datasets/lift.zarr", "weight": 0.7}, ...])
    sampler = MixtureBatchSampler([len(d) for d in datasets], [e.weight for e in entries], batch_size, seed)
    dataset = MixtureDataset(datasets, task_offsets)         # one DemoDataset per store

Each row of a batch picks its store with probability weight / sum(weights), then a window of that store
uniformly. Batch number s is drawn from a generator seeded by (seed, s) alone, so a run resumed at step s
sees exactly the batches of the uninterrupted run. Sampling by weight is how the stores are weighted in the
loss: every row counts the same, so a store's expected share of each step's loss is its weight (weighting the
loss a second time would count the weights twice).

Task indices are global across the mixture: store k's task i is `task_offsets[k] + i`, so a task table or
a language table (one instruction per task) covers every store's tasks. Batches carry `store` [B], the index
of each row's store.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from data.dataset import DemoDataset

ENTRY_KEYS = ("name", "dataset", "weight", "obs_keys")


class MixtureError(ValueError):
    """A mixture that cannot be trained on as written; the message names the entry and what to do."""


@dataclass(frozen=True)
class MixtureEntry:
    name: str
    dataset: str
    weight: float
    obs_keys: tuple[str, ...] | None = None  # the keys this store provides; None: all of the run's


def parse_mixture(entries: Sequence[dict[str, Any]]) -> list[MixtureEntry]:
    """Validated entries of `data.mixture` (a list of {name, dataset, weight}); one line per problem."""
    if not isinstance(entries, (list, tuple)) or not entries:
        raise MixtureError("data.mixture must be a list of {name, dataset, weight} entries, e.g. "
                           "[{name: lift, dataset: datasets/lift.zarr, weight: 1.0}]")
    out: list[MixtureEntry] = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not {"name", "dataset", "weight"} <= set(e) <= {*ENTRY_KEYS}:
            got = sorted(e) if isinstance(e, dict) else e
            raise MixtureError(f"data.mixture[{i}] must have the keys name, dataset, weight (and optionally "
                               f"obs_keys); got {got}")
        name, weight = e["name"], e["weight"]
        if not isinstance(name, str) or not name:
            raise MixtureError(f"data.mixture[{i}]: name must be a non-empty string, got {name!r}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
                or weight <= 0:
            raise MixtureError(f"data.mixture[{i}] ({name}): weight must be a number > 0, got {weight!r}")
        if any(o.name == name for o in out):
            raise MixtureError(f"data.mixture: two stores are named {name!r}; give each store its own name")
        keys = e.get("obs_keys")
        if keys is not None and (not isinstance(keys, (list, tuple)) or not keys
                                 or not all(isinstance(k, str) for k in keys)):
            raise MixtureError(f"data.mixture[{i}] ({name}): obs_keys must be a non-empty list of key names, "
                               f"got {keys!r}")
        out.append(MixtureEntry(name, str(e["dataset"]), float(weight), None if keys is None else tuple(keys)))
    return out


class MixtureBatchSampler(Sampler[list[int]]):
    """Endless batches of global window indices (store k's window w is `offsets[k] + w`), batch s a
    function of (seed, s) alone. With several data-parallel ranks each rank takes its own slice of one
    global batch of `batch_size * world_size` rows."""

    def __init__(self, sizes: Sequence[int], weights: Sequence[float], batch_size: int, seed: int = 0,
                 start_step: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if len(sizes) != len(weights) or not sizes:
            raise ValueError("need one weight per store, and at least one store")
        if min(sizes) < 1:
            raise ValueError("every store of a mixture needs at least one training window")
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        w = np.asarray(weights, dtype=np.float64)
        self.probs = w / w.sum()
        self.batch_size, self.seed, self.start_step = batch_size, seed, start_step
        self.rank, self.world_size = rank, world_size

    def batch(self, step: int) -> list[int]:
        rng = np.random.default_rng([self.seed, step])  # (seed, step) alone: exact resume
        n = self.batch_size * self.world_size
        store = rng.choice(len(self.sizes), size=n, p=self.probs)
        window = rng.integers(0, self.sizes[store])
        rows = (self.offsets[store] + window)[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        return rows.tolist()

    def __iter__(self):
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1


class MixtureDataset(Dataset):
    """The windows of several DemoDatasets, one index space: store k's window w is `offsets[k] + w`."""

    def __init__(self, datasets: Sequence[DemoDataset], task_offsets: Sequence[int],
                 store_ids: Sequence[int] | None = None, padding: Padding | None = None) -> None:
        self.datasets = list(datasets)
        self.padding = padding
        # each dataset's index in the mixture (a store without validation episodes has no validation dataset)
        self.store_ids = list(range(len(self.datasets))) if store_ids is None else [int(i) for i in store_ids]
        self.sizes = np.asarray([len(d) for d in self.datasets], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self.task_offsets = [int(t) for t in task_offsets]

    def __len__(self) -> int:
        return int(self.sizes.sum())

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        indices = np.asarray(indices, dtype=np.int64)
        store = np.searchsorted(self.offsets, indices, side="right") - 1
        parts, order = [], []
        for k in np.unique(store):  # one vectorised gather per store
            rows = np.nonzero(store == k)[0]
            part = self.datasets[k].__getitems__(indices[rows] - self.offsets[k])
            part["task"] = part["task"] + self.task_offsets[k]
            part["store"] = torch.full((len(rows),), self.store_ids[k], dtype=torch.long)
            if self.padding is not None:
                self.padding.apply(part)
            parts.append(part)
            order.append(rows)
        back = torch.from_numpy(np.argsort(np.concatenate(order), kind="stable"))  # the batch's own order

        def cat(values: list[torch.Tensor]) -> torch.Tensor:
            return torch.cat(values)[back]

        batch = {
            "obs": {key: cat([p["obs"][key] for p in parts]) for key in parts[0]["obs"]},
            "action": cat([p["action"] for p in parts]),
            "action_is_pad": cat([p["action_is_pad"] for p in parts]),
            "task": cat([p["task"] for p in parts]),
            "store": cat([p["store"] for p in parts]),
            "goal": {},
        }
        if self.padding is not None:
            batch["obs_is_pad"] = {key: cat([p["obs_is_pad"][key] for p in parts]) for key in parts[0]["obs_is_pad"]}
        return batch


@dataclass(frozen=True)
class Padding:
    """For stores of different robots in one batch: every observation key of the mixture (missing ones
    zero-filled and flagged in `obs_is_pad` [B] per key, never silently) and actions padded to the widest
    robot's dimension (a row's own dimension is its store's; the policy knows it by `store`)."""

    shapes: dict[str, tuple[tuple[int, ...], str]]  # key -> (shape of one row, numpy dtype name)
    action_dim: int

    def apply(self, part: dict[str, Any]) -> None:
        n, to = part["action"].shape[0], next(iter(part["obs"].values())).shape[1]
        part["obs_is_pad"] = {}
        for key, (shape, dtype) in self.shapes.items():
            have = key in part["obs"]
            if not have:
                part["obs"][key] = torch.zeros((n, to, *shape), dtype=getattr(torch, dtype))
            part["obs_is_pad"][key] = torch.full((n,), not have, dtype=torch.bool)
        da = part["action"].shape[-1]
        if da < self.action_dim:
            part["action"] = torch.nn.functional.pad(part["action"], (0, self.action_dim - da))
