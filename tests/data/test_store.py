import numpy as np
import pytest

from data.inspect import describe
from data.store import DemoStore, StoreError
from envs.spec import EnvSpec
from tests.conftest import synthetic_episode


def test_write_and_read_back_exactly(tmp_path):
    rng = np.random.default_rng(1)
    spec = EnvSpec(simulator="robosuite", task="Lift").to_dict()  # stored complete, so it reads back equal
    tasks = [{"name": "a", "instruction": "do a", "env_spec": spec},
             {"name": "b", "instruction": "do b", "env_spec": {}}]
    store = DemoStore.create(tmp_path / "s.zarr", tasks=tasks, action_space={"low": -1, "high": 1})
    episodes = [synthetic_episode(rng, n, image=True) for n in (3, 9, 6)]
    for i, ep in enumerate(episodes):
        store.append_episode(ep, task=i % 2, seed=100 + i, success=i != 1)
    again = DemoStore.open(tmp_path / "s.zarr")
    assert again.n_episodes == 3 and again.n_steps == 18
    assert list(again.episode_ends) == [3, 12, 18]
    assert list(again.episode_task) == [0, 1, 0]
    assert list(again.episode_seed) == [100, 101, 102]
    assert list(again.episode_success) == [True, False, True]
    assert again.tasks == tasks and again.action_space == {"low": -1, "high": 1}
    for i, ep in enumerate(episodes):
        got = again.get_episode(i)
        assert set(got) == set(ep)
        for k in ep:
            assert got[k].dtype == ep[k].dtype
            np.testing.assert_array_equal(got[k], ep[k])
    loaded = again.load()
    np.testing.assert_array_equal(loaded["action"], np.concatenate([e["action"] for e in episodes]))
    assert again.array("agentview_image").chunks[0] <= 8  # a few frames per image chunk


def test_failure_mid_append_leaves_previous_episodes(make_store, monkeypatch):
    store = make_store(3)
    path, before = store.path, store.load()
    rng = np.random.default_rng(5)

    # Fail after the data rows are written but before the commit point.
    meta = store._root["meta"]
    real_resize = type(meta["episode_ends"]).resize

    def exploding_resize(self, shape):
        if self.path.endswith("episode_ends"):
            raise RuntimeError("injected crash")
        return real_resize(self, shape)

    monkeypatch.setattr(type(meta["episode_ends"]), "resize", exploding_resize)
    with pytest.raises(RuntimeError, match="injected"):
        store.append_episode(synthetic_episode(rng, 7))
    monkeypatch.undo()

    reopened = DemoStore.open(path, "r")
    assert reopened.n_episodes == 3
    for k, v in reopened.load().items():
        np.testing.assert_array_equal(v, before[k])
    # Appending after the failure continues cleanly.
    store.append_episode(synthetic_episode(rng, 4))
    assert DemoStore.open(path).n_episodes == 4


def test_reopen_for_append_trims_uncommitted_rows(make_store):
    store = make_store(2)
    # Simulate a crash that left rows past the last committed end (another process died).
    arr = store._root["data"]["action"]
    arr.resize((arr.shape[0] + 5, 7))
    again = DemoStore.open(store.path, "a")
    assert again.array("action").shape[0] == again.n_steps == store.n_steps


def test_bad_input_errors(tmp_path, make_store):
    with pytest.raises(StoreError, match="not a demo store"):
        DemoStore.open(tmp_path)
    store = make_store(1)
    rng = np.random.default_rng(0)
    ragged = synthetic_episode(rng, 5)
    ragged["action"] = ragged["action"][:4]
    with pytest.raises(StoreError, match="ragged"):
        store.append_episode(ragged)
    nan = synthetic_episode(rng, 5)
    nan["action"][2, 1] = np.nan
    with pytest.raises(StoreError, match="NaN"):
        store.append_episode(nan)
    wrong_keys = synthetic_episode(rng, 5)
    del wrong_keys["object"]
    with pytest.raises(StoreError, match="differ"):
        store.append_episode(wrong_keys)
    with pytest.raises(StoreError, match="no key"):
        store.array("missing_camera_image")
    assert DemoStore.open(store.path).n_episodes == 1  # nothing written by the failures
    with pytest.raises(StoreError, match="read-only"):
        DemoStore.open(store.path, "r").append_episode(synthetic_episode(rng, 3))


def test_newer_format_version_is_refused(make_store):
    store = make_store(1)
    store._root.attrs["format_version"] = 99
    with pytest.raises(StoreError, match="newer"):
        DemoStore.open(store.path)


def test_inspect_lists_keys_tasks_and_actions(make_store):
    store = make_store(3, image=True, n_tasks=2)
    text = describe(store.path)
    assert "episodes   3" in text
    assert "agentview_image" in text and "uint8" in text
    assert "do thing 1" in text and "action statistics" in text
