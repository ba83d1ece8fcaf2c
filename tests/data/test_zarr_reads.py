"""Zarr-backed batches through the decoded-chunk cache are bit-identical to in-memory batches."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from data.chunk_cache import MB, ChunkReader, cache_nbytes, split_budget
from data.dataset import DemoDataset

KEYS = ["robot0_eef_pos", "object", "agentview_image"]


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], dict):
            _same(a[k], b[k])
        else:
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("cache_mb", [0, 0.02, 64])
def test_zarr_batches_equal_in_memory_batches(make_store, cache_mb):
    store = make_store(n_episodes=5, lengths=[9, 3, 14, 6, 11], image=True)
    ids = [0, 2, 3, 4]
    memory = DemoDataset(store, KEYS, 2, 6, 3, episode_ids=ids)
    zarr_ds = DemoDataset(store, KEYS, 2, 6, 3, episode_ids=ids, in_memory=False, cache_mb=cache_mb)
    assert all(r.direct for r in zarr_ds._source.values())  # the layout DemoStore writes is read directly
    rng = np.random.default_rng(0)
    edges = [0, len(memory) - 1, 1, len(memory) - 2]  # windows padded at episode starts and ends
    for b in [edges, *[rng.integers(0, len(memory), 16) for _ in range(12)], list(range(len(memory)))]:
        _same(memory.__getitems__(b), zarr_ds.__getitems__(b))
    budget = int(cache_mb * MB)
    assert cache_nbytes(zarr_ds._source) <= budget
    if cache_mb == 64:  # everything fits: a second pass reads no chunk at all
        read = sum(r.chunks_read for r in zarr_ds._source.values())
        zarr_ds.__getitems__(list(range(len(memory))))
        assert sum(r.chunks_read for r in zarr_ds._source.values()) == read


def test_cache_is_bounded_and_evicts_the_least_recently_used_chunk(make_store):
    store = make_store(n_episodes=3, lengths=[10, 12, 8], image=True)
    array = store.array("agentview_image")
    full = np.asarray(array[:])
    rows = array.chunks[0]
    chunk_bytes = full[:rows].nbytes
    reader = ChunkReader(array, budget_bytes=3 * chunk_bytes + chunk_bytes // 2)
    assert reader.n_slots == 3 and reader.nbytes == 3 * chunk_bytes

    def take(*chunks: int) -> int:
        before = reader.chunks_read
        picked = np.array([c * rows + 1 for c in chunks])
        np.testing.assert_array_equal(reader.take(picked), full[picked])
        return reader.chunks_read - before

    assert take(0, 1, 2) == 3
    assert take(0) == 0  # hit; chunk 1 is now the least recently used
    assert take(3) == 1 and reader.cached_chunks == 3
    assert take(0, 2, 3) == 0 and take(1) == 1  # 1 had been evicted, 0/2/3 had not
    # A batch needing more chunks than the cache holds is still read whole and right; the cache keeps 3.
    np.testing.assert_array_equal(reader.take(np.arange(len(full))[::-1].reshape(6, 5)),
                                  full[np.arange(len(full))[::-1].reshape(6, 5)])
    assert reader.cached_chunks == 3 and reader.nbytes == 3 * chunk_bytes


def test_unwritten_chunks_and_other_codecs_read_like_zarr(tmp_path):
    group = zarr.open_group(tmp_path / "z.zarr", mode="w", zarr_format=3)
    data = np.random.default_rng(0).integers(0, 255, size=(13, 4, 4, 3), dtype=np.uint8)
    data[4:8] = 7  # a whole chunk of fill value: zarr does not write it
    blosc = group.create_array("blosc", shape=data.shape, chunks=(4, 4, 4, 3), dtype=np.uint8, fill_value=7,
                               compressors=[BloscCodec(cname="lz4")])
    zstd = group.create_array("zstd", shape=data.shape, chunks=(4, 4, 4, 3), dtype=np.uint8,
                              compressors=[ZstdCodec()])
    blosc[:], zstd[:] = data, data
    assert not (tmp_path / "z.zarr/blosc/c/1/0/0/0").exists()
    rows = np.array([[12, 5, 0], [6, 6, 3]])
    for array, direct in ((blosc, True), (zstd, False)):
        reader = ChunkReader(array, budget_bytes=1 * MB)
        assert reader.direct is direct
        np.testing.assert_array_equal(reader.take(rows), data[rows])
        np.testing.assert_array_equal(reader.take(np.arange(13)), data)


def test_dataset_pickles_without_its_cache(make_store):
    store = make_store(n_episodes=3, image=True)
    ds = DemoDataset(store, KEYS, 2, 6, 3, in_memory=False, cache_mb=64)
    batch = list(range(0, len(ds), 2))
    first = ds.__getitems__(batch)
    clone = pickle.loads(pickle.dumps(ds))  # what a spawned DataLoader worker receives
    assert all(r.cached_chunks == 0 for r in clone._source.values())
    _same(first, clone.__getitems__(batch))
    assert len(pickle.dumps(ds)) < sum(r.nbytes for r in ds._source.values())


def test_budget_split_caches_small_keys_whole_and_never_exceeds_the_budget():
    shares = split_budget({"pos": 100, "cam_a": 10_000, "cam_b": 10_000, "action": 300}, 6_400)
    assert shares["pos"] == 100 and shares["action"] == 300 and shares["cam_a"] == shares["cam_b"] == 3_000
    assert sum(split_budget({"a": 5, "b": 7}, 0).values()) == 0
    assert split_budget({"a": 5, "b": 7}, 100) == {"a": 5, "b": 7}
