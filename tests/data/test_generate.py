"""Demo generation: well-formed stores for every robosuite task, resuming, determinism, bad input.

Horizons are cut short to keep CI fast, so most episodes here fail and `keep_failed` keeps them:
these tests check the stores and their bookkeeping, not the experts (see notes/envs_results.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from data import generate as gen
from data.generate import generate, parse_args, run_episode
from data.store import DemoStore, StoreError
from envs.factory import make_env
from envs.registry import ROBOSUITE_NAMES

# "states": flat simulator states, recorded for single-task robosuite stores (replay checks, robomimic export)
STATE_KEYS = {"action", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object-state", "states"}


def _check_store(store: DemoStore, n_episodes: int, name: str) -> None:
    assert store.n_episodes == n_episodes
    assert store.tasks[0]["name"] == name and store.tasks[0]["instruction"]
    assert store.episode_ends[-1] == store.n_steps and np.all(np.diff(store.episode_ends) > 0)
    data = store.load()
    assert data["action"].dtype == np.float32 and data["action"].shape == (store.n_steps, 7)
    assert np.all(np.abs(data["action"]) <= 1.0)
    assert store.action_space["controller"] == "OSC_POSE"


@pytest.mark.parametrize("name", sorted(ROBOSUITE_NAMES))
def test_two_episode_state_store_for_every_robosuite_task(tmp_path, name):
    store = generate(name, 2, str(tmp_path / "s.zarr"), workers=0, horizon=12, keep_failed=True,
                     progress=False)
    _check_store(store, 2, name)
    assert set(store.keys) == STATE_KEYS
    assert store.episode_seed.tolist() == [0, 1] and store.episode_task.tolist() == [0, 0]
    assert store.tasks[0]["env_spec"]["horizon"] == 12


def test_small_image_store_from_spawned_workers_reads_through_the_datamodule(tmp_path):
    from training.datamodule import DemoDataModule

    out = str(tmp_path / "img.zarr")
    store = generate("lift", 2, out, images=True, image_size=24, workers=2, horizon=6, keep_failed=True,
                     progress=False)
    _check_store(store, 2, "lift")
    image = store.load(["agentview_image"])["agentview_image"]
    assert image.dtype == np.uint8 and image.shape == (store.n_steps, 24, 24, 3)
    assert sorted(store.episode_seed.tolist()) == [0, 1]
    keys = ["agentview_image", "robot0_eye_in_hand_image", "robot0_eef_pos"]
    dm = DemoDataModule(out, keys, n_obs_steps=2, horizon=4, n_action_steps=2, batch_size=2, val_ratio=0.0)
    batch = next(iter(dm.train_dataloader()))
    assert tuple(batch["obs"]["agentview_image"].shape) == (2, 2, 24, 24, 3)
    assert tuple(batch["action"].shape) == (2, 4, 7)


def test_rebuilt_env_and_expert_reproduce_the_stored_episode(tmp_path):
    store = generate("lift", 1, str(tmp_path / "s.zarr"), workers=0, seed=5, noise=0.1, horizon=15,
                     keep_failed=True, progress=False)
    stored = store.get_episode(0)
    spec = store.tasks[0]["env_spec"]
    env = make_env(spec)  # from the saved spec alone, as evaluation does
    from envs.experts import make_expert

    expert = make_expert(spec, noise=0.1)
    obs, _ = env.reset(seed=int(store.episode_seed[0]))
    expert.reset(env)
    for t in range(len(stored["action"])):
        for key in obs:
            np.testing.assert_array_equal(obs[key], stored[key][t])
        action = expert.act(env, obs)
        np.testing.assert_array_equal(action, stored["action"][t])
        obs, *_ = env.step(action)
    env.close()


def test_resume_tops_up_and_failures_are_dropped(tmp_path):
    out = str(tmp_path / "s.zarr")
    generate("lift", 2, out, workers=0, horizon=8, keep_failed=True, progress=False)
    first = DemoStore.open(out).get_episode(1)
    store = generate("lift", 3, out, workers=0, horizon=8, keep_failed=True, progress=False)
    assert store.episode_seed.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(store.get_episode(1)["action"], first["action"])
    # Eight steps are too few for the expert; without keep_failed nothing is kept and it says so.
    with pytest.raises(RuntimeError, match="failed too often"):
        generate("lift", 1, str(tmp_path / "fail.zarr"), workers=0, horizon=8, progress=False)


def test_successful_episode_ends_at_success(tmp_path):
    result = run_episode(make_lift_spec(), seed=0)
    assert result["success"] and result["seed"] == 0
    assert len(result["episode"]["action"]) < 120  # stopped when the cube was up


def make_lift_spec() -> dict:
    from envs.registry import resolve_tasks

    return resolve_tasks("lift")[0]["env_spec"].to_dict()


def test_interrupt_leaves_a_valid_store(tmp_path, monkeypatch):
    out = str(tmp_path / "s.zarr")
    real = gen._job
    calls = []

    def interrupted(args):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(args)

    monkeypatch.setattr(gen, "_job", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate("lift", 3, out, workers=0, horizon=5, keep_failed=True, progress=False)
    monkeypatch.setattr(gen, "_job", real)
    assert DemoStore.open(out).n_episodes == 1
    store = generate("lift", 3, out, workers=0, horizon=5, keep_failed=True, progress=False)
    assert store.episode_seed.tolist() == [0, 1, 2]


def test_multi_task_episodes_spread_over_tasks(tmp_path):
    store = generate("reach-v3,push-v3", 3, str(tmp_path / "m.zarr"), workers=0, horizon=4, keep_failed=True,
                     progress=False)
    assert [t["name"] for t in store.tasks] == ["reach-v3", "push-v3"]
    assert store.episode_task.tolist() == [0, 0, 1] and store.episode_seed.tolist() == [0, 1, 0]
    # Lift and Door observe objects of different sizes: a clear error, not a ragged store.
    with pytest.raises(StoreError, match="multi-task store needs the same observation keys and shapes"):
        generate("lift,door", 2, str(tmp_path / "x.zarr"), workers=0, horizon=3, keep_failed=True,
                 progress=False)


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="unknown argument 'episodes'"):
        parse_args(["episodes=3"])
    with pytest.raises(ValueError, match="key=value"):
        parse_args(["lift"])
    with pytest.raises(ValueError, match="images must be true or false"):
        parse_args(["images=maybe"])
    with pytest.raises(ValueError, match="n_episodes must be an integer"):
        parse_args(["n_episodes=ten"])
    args = parse_args(["task=can", "images=true", "n_episodes=7"])
    assert args["out"] == "datasets/can-images.zarr" and args["n_episodes"] == 7 and args["images"] is True
    with pytest.raises(ValueError, match="unknown task 'juggle'"):
        generate("juggle", 2, str(tmp_path / "x.zarr"), workers=0)
    with pytest.raises(ValueError, match="evaluation"):
        generate("lift", 2, str(tmp_path / "x.zarr"), seed=1_000_000)
    generate("lift", 1, str(tmp_path / "s.zarr"), workers=0, horizon=4, keep_failed=True, progress=False)
    with pytest.raises(StoreError, match="other tasks"):
        generate("door", 1, str(tmp_path / "s.zarr"), workers=0, horizon=4, keep_failed=True, progress=False)
    assert gen.main(["task=juggle", f"out={tmp_path / 'y.zarr'}"]) == 2


def test_two_episode_stores_for_three_metaworld_tasks_read_through_the_datamodule(tmp_path):
    from training.datamodule import DemoDataModule

    out = str(tmp_path / "mw.zarr")
    store = generate("reach-v3,push-v3,drawer-open-v3", 6, out, workers=0, horizon=8, keep_failed=True,
                     progress=False)
    assert store.n_episodes == 6 and sorted(store.episode_task.tolist()) == [0, 0, 1, 1, 2, 2]
    assert store.array("state").shape[1:] == (39,)
    dm = DemoDataModule(out, ["state"], n_obs_steps=2, horizon=4, n_action_steps=2, batch_size=4, val_ratio=0.0)
    batch = next(iter(dm.train_dataloader()))
    assert batch["obs"]["state"].shape == (4, 2, 39) and batch["action"].shape == (4, 4, 4)
    assert set(batch["task"].tolist()) <= {0, 1, 2}


def test_a_worker_keeps_one_env_across_episodes_and_a_reused_env_replays_like_a_fresh_one(tmp_path, monkeypatch):
    """Building and freeing an env (and its GL context) per episode is slow and, under OSMesa, crashed long
    runs; the worker builds one per task and resets it by seed (hard_reset=False)."""
    import envs.factory

    built = []

    def counting_make_env(spec):
        built.append(spec["task"])
        return make_env(spec)

    monkeypatch.setattr(gen, "_CACHE", {})
    monkeypatch.setattr(envs.factory, "make_env", counting_make_env)
    try:
        store = generate("lift", 3, str(tmp_path / "s.zarr"), workers=0, horizon=12, keep_failed=True,
                         progress=False)
    finally:
        if "env" in gen._CACHE:
            gen._CACHE["env"].close()
    assert built == ["Lift"] and store.episode_seed.tolist() == [0, 1, 2]
    monkeypatch.setattr(gen, "_CACHE", {})
    fresh = run_episode(store.tasks[0]["env_spec"], seed=2)["episode"]  # seed 2 in a new env
    gen._CACHE["env"].close()
    third = store.get_episode(2)  # seed 2 in the env that had already run seeds 0 and 1
    for key, value in fresh.items():
        np.testing.assert_array_equal(third[key], value, err_msg=key)
