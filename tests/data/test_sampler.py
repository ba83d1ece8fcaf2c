import numpy as np
import pytest
import torch

from data.dataset import DemoDataset, default_normalizer_modes
from data.normalize import Normalizer
from data.sampler import WindowSampler, split_episodes
from training.datamodule import DemoDataModule


def brute_force_windows(ends, to, horizon, ta):
    """Every window by the definition: start To-1 before, reach Ta-1 past the end, pad with edges."""
    out = []
    lo = 0
    for hi in ends:
        for s in range(lo - (to - 1), max(hi - horizon + ta - 1, lo - (to - 1)) + 1):
            t = np.arange(s, s + horizon)
            out.append((np.clip(t, lo, hi - 1), (t < lo) | (t >= hi)))
        lo = hi
    return out


@pytest.mark.parametrize("to,horizon,ta", [(1, 1, 1), (2, 10, 8), (2, 16, 8), (3, 5, 2)])
def test_windows_match_brute_force(to, horizon, ta):
    ends = np.cumsum([3, 12, 1, 20])
    sampler = WindowSampler(ends, to, horizon, ta)
    expected = brute_force_windows(ends, to, horizon, ta)
    assert len(sampler) == len(expected)
    rows, pad = sampler.rows(np.arange(len(sampler)))
    for i, (r, p) in enumerate(expected):
        np.testing.assert_array_equal(rows[i], r)
        np.testing.assert_array_equal(pad[i], p)


def test_split_is_reproducible_and_disjoint():
    a = split_episodes(50, 0.2, seed=3)
    b = split_episodes(50, 0.2, seed=3)
    c = split_episodes(50, 0.2, seed=4)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[1], c[1])
    assert len(a[1]) == 10 and not set(a[0]) & set(a[1])
    capped, _ = split_episodes(50, 0.2, seed=3, max_train_episodes=7)
    assert len(capped) == 7 and set(capped) <= set(a[0])
    with pytest.raises(ValueError):
        split_episodes(10, 1.0)


def test_dataset_batch_matches_store_and_padding(make_store):
    store = make_store(lengths=[4, 9])
    ds = DemoDataset(store, ["robot0_eef_pos", "object"], n_obs_steps=2, horizon=6, n_action_steps=4)
    arrays = store.load()
    batch = ds.__getitems__(list(range(len(ds))))
    rows, pad = ds.sampler.rows(np.arange(len(ds)))
    np.testing.assert_array_equal(batch["action"].numpy(), arrays["action"][rows])
    np.testing.assert_array_equal(batch["obs"]["object"].numpy(), arrays["object"][rows[:, :2]])
    assert batch["action_is_pad"].dtype == torch.bool
    assert batch["action_is_pad"][0, 0]  # first window starts one step before the episode
    assert "obs_is_pad" not in batch  # padding of observations repeats the edge frame; nothing reads a flag
    # zarr-backed reads give the same batch
    zb = DemoDataset(store, ["robot0_eef_pos", "object"], 2, 6, 4, in_memory=False).__getitems__([0, 3, 7])
    mb = ds.__getitems__([0, 3, 7])
    for k in ("action", "action_is_pad", "task"):
        assert torch.equal(zb[k], mb[k])


def test_datamodule_yields_design_batch_with_language(make_store):
    store = make_store(6, image=True, n_tasks=2)
    dm = DemoDataModule(store.path, ["robot0_eef_pos", "agentview_image"], 2, 8, 4, batch_size=5,
                        val_ratio=0.34, lang_dim=384)
    batch = next(iter(dm.train_dataloader()))
    assert batch["obs"]["agentview_image"].shape == (5, 2, 16, 16, 3)
    assert batch["obs"]["agentview_image"].dtype == torch.uint8
    assert batch["action"].shape == (5, 8, 7)
    assert batch["goal"] == {} and batch["task"].shape == (5,)  # the policy's table holds the language
    assert len(dm.val_ids) == 2 and next(iter(dm.val_dataloader()))["action"].shape[1] == 8
    meta = dm.shape_meta()
    assert meta["obs"]["agentview_image"]["type"] == "rgb" and meta["lang_dim"] == 384
    norm = dm.fit_normalizer(default_normalizer_modes(meta))
    assert set(norm.modes) == {"robot0_eef_pos", "agentview_image", "action"}
    with pytest.raises(ValueError, match="no key"):
        DemoDataModule(store.path, ["missing_key"], 2, 8, 4).setup()


def test_normalizer_round_trip_and_state_dict_reload():
    rng = np.random.default_rng(0)
    arrays = {"a": rng.normal(3, 2, size=(100, 4)).astype(np.float32),
              "b": np.concatenate([rng.uniform(-5, 7, (100, 1)), np.full((100, 1), 2.0)], 1)}
    for modes in ({"a": "gaussian", "b": "limits"}, {"a": "identity", "b": "limits"}):
        norm = Normalizer.fit(arrays, modes)
        for k in arrays:
            x = torch.as_tensor(arrays[k])
            y = norm.normalize(k, x)
            torch.testing.assert_close(norm.unnormalize(k, y), x.float(), rtol=1e-5, atol=1e-5)
        yb = norm.normalize("b", torch.as_tensor(arrays["b"]))
        assert yb[:, 0].min() >= -1 - 1e-6 and yb[:, 0].max() <= 1 + 1e-6
        assert torch.all(yb[:, 1] == 0)  # constant dimension maps to 0, not inf
        fresh = Normalizer.from_config(norm.config())
        fresh.load_state_dict(norm.state_dict())
        torch.testing.assert_close(fresh.normalize("a", torch.ones(2, 4)), norm.normalize("a", torch.ones(2, 4)))
    img = Normalizer({"cam_image": "image"}, {})
    out = img.normalize("cam_image", torch.tensor([0, 255], dtype=torch.uint8))
    torch.testing.assert_close(out, torch.tensor([-1.0, 1.0]))
    with pytest.raises(ValueError, match="unknown normalizer mode"):
        Normalizer.fit(arrays, {"a": "minmax"})


def test_step_batches_depend_on_step_only_and_cover_each_epoch():
    from data.dataset import StepBatchSampler

    full = StepBatchSampler(23, 5, seed=1)
    it = iter(full)
    batches = [next(it) for _ in range(10)]
    resumed = iter(StepBatchSampler(23, 5, seed=1, start_step=6))
    assert [next(resumed) for _ in range(4)] == batches[6:]
    flat = [i for b in batches for i in b]
    assert sorted(flat[:23]) == list(range(23))  # the first epoch is a permutation
    # two ranks split one global batch without overlap
    r0, r1 = StepBatchSampler(23, 4, 1, 0, 0, 2), StepBatchSampler(23, 4, 1, 0, 1, 2)
    assert not set(r0.batch(0)) & set(r1.batch(0))
