"""The mixture sampler and dataset: shares by weight, exact repeat and resume, global task indices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.dataset import DemoDataset
from data.mixture import MixtureBatchSampler, MixtureDataset, MixtureError, parse_mixture


def test_each_store_share_is_within_two_percent_of_its_weight():
    weights = [0.5, 0.3, 0.2]
    sampler = MixtureBatchSampler([40, 7, 300], [5.0, 3.0, 2.0], batch_size=100, seed=3)
    rows = np.concatenate([sampler.batch(s) for s in range(100)])  # 10,000 draws
    store = np.searchsorted(sampler.offsets, rows, side="right") - 1
    share = np.bincount(store, minlength=3) / len(rows)
    assert np.all(np.abs(share - weights) < 0.02), share
    # every window of each store is reachable, and nothing outside the stores
    assert rows.min() >= 0 and rows.max() < 347
    assert set(rows[store == 1] - 40) == set(range(7))


def test_batches_repeat_exactly_per_seed_and_resume_where_they_stopped():
    a = MixtureBatchSampler([10, 20], [1, 1], batch_size=8, seed=0)
    b = MixtureBatchSampler([10, 20], [1, 1], batch_size=8, seed=0)
    c = MixtureBatchSampler([10, 20], [1, 1], batch_size=8, seed=1)
    first = [next(it) for it in [iter(a)] for _ in range(6)]
    it_a = iter(a)
    straight = [next(it_a) for _ in range(6)]
    assert straight == first == [b.batch(s) for s in range(6)]
    assert straight != [c.batch(s) for s in range(6)]
    resumed = iter(MixtureBatchSampler([10, 20], [1, 1], batch_size=8, seed=0, start_step=4))
    assert [next(resumed), next(resumed)] == straight[4:6]
    # two ranks split one global batch
    r0 = MixtureBatchSampler([10, 20], [1, 1], batch_size=4, seed=0, rank=0, world_size=2).batch(5)
    r1 = MixtureBatchSampler([10, 20], [1, 1], batch_size=4, seed=0, rank=1, world_size=2).batch(5)
    assert r0 + r1 == a.batch(5)


def test_dataset_gathers_each_store_with_global_task_indices(make_store):
    s0, s1 = make_store(3, n_tasks=2, name="a.zarr"), make_store(2, n_tasks=1, name="b.zarr")
    keys = ["robot0_eef_pos", "object"]
    d0, d1 = DemoDataset(s0, keys, 2, 8, 4), DemoDataset(s1, keys, 2, 8, 4)
    mix = MixtureDataset([d0, d1], task_offsets=[0, 2])
    idx = [len(d0) + 1, 0, len(d0), 2]
    batch = mix.__getitems__(idx)
    assert batch["store"].tolist() == [1, 0, 1, 0]
    assert batch["task"].tolist() == [2, d0.__getitems__([0])["task"].item(), 2, d0.__getitems__([2])["task"].item()]
    torch.testing.assert_close(batch["action"][0], d1.__getitems__([1])["action"][0])
    torch.testing.assert_close(batch["obs"]["object"][3], d0.__getitems__([2])["obs"]["object"][0])


@pytest.mark.parametrize("entries, message", [
    ([{"name": "a", "dataset": "x", "weight": 0.0}], r"data.mixture\[0\] \(a\): weight must be a number > 0"),
    ([{"name": "a", "dataset": "x", "weight": -1}], "weight must be a number > 0"),
    ([{"name": "a", "dataset": "x", "weight": 1}, {"name": "a", "dataset": "y", "weight": 1}],
     "two stores are named 'a'"),
    ([{"name": "a", "dataset": "x"}], "must have the keys name, dataset, weight"),
    ([], "must be a list"),
])
def test_bad_mixtures_fail_in_one_line(entries, message):
    with pytest.raises(MixtureError, match=message):
        parse_mixture(entries)
