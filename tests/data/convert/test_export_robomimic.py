"""Store -> robomimic HDF5 -> store: the layout robomimic loads, exact round trips, replay of our demos."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from data.convert.cli import convert
from data.convert.verify import main as verify_main
from data.convert.verify import verify_store
from data.export import ExportError, export_robomimic, main
from tests.data.convert.writers import robomimic_lift_file


def _assert_same_store(a, b, keys=None):
    assert b.n_episodes == a.n_episodes and b.episode_lengths.tolist() == a.episode_lengths.tolist()
    assert b.episode_success.tolist() == a.episode_success.tolist()
    for k in keys or a.keys:
        got, want = b.array(k)[:], a.array(k)[:]
        assert got.dtype == want.dtype, k
        np.testing.assert_array_equal(got, want, err_msg=k)


def test_our_lift_demos_round_trip_and_replay_here(lift_store, tmp_path, capsys):
    out = export_robomimic(lift_store.path, str(tmp_path / "lift.hdf5"))
    with h5py.File(out, "r") as f:  # robomimic's layout
        data = f["data"]
        assert sorted(data) == ["demo_0", "demo_1", "demo_2"] and data.attrs["total"] == lift_store.n_steps
        env_args = json.loads(data.attrs["env_args"])
        assert env_args["env_name"] == "Lift" and env_args["type"] == 1
        assert env_args["env_kwargs"]["robots"] == ["Panda"] and env_args["env_kwargs"]["control_freq"] == 20
        g = data["demo_1"]
        n = int(lift_store.episode_lengths[1])
        assert g.attrs["num_samples"] == n and "<mujoco" in g.attrs["model_file"]
        assert sorted(g["obs"]) == ["object", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"]
        assert sorted(g["next_obs"]) == sorted(g["obs"])
        ep = lift_store.get_episode(1)
        np.testing.assert_array_equal(g["obs/object"][()], ep["object-state"])
        np.testing.assert_array_equal(g["next_obs/object"][()][:-1], ep["object-state"][1:])
        assert g["actions"].shape == (n, 7) and g["states"].shape == (n, 32) and g["states"].dtype == np.float64
        assert g["rewards"][()].tolist() == [0.0] * (n - 1) + [1.0] and g["dones"][()][-1] == 1
    back = convert([out], str(tmp_path / "back.zarr"), verify=True, progress=False)
    assert "replayed 3 episode(s): 3 reach success (100%)" in capsys.readouterr().out
    _assert_same_store(lift_store, back)
    assert back.tasks == lift_store.tasks and back.action_space == lift_store.action_space
    assert back.attrs["verify"]["success_rate"] == 1.0
    # Restoring a state re-aims the controllers at it, so our own demos replay on their recorded track.
    assert back.attrs["verify"]["drift_max_worst_m"] < 1e-4

    # The check can fail: an episode whose arm actions are zeroed never lifts the cube.
    broken = tmp_path / "perturbed.hdf5"
    shutil.copy(out, broken)
    with h5py.File(broken, "r+") as f:
        actions = f["data/demo_1/actions"]
        actions[:, :6] = 0.0
    perturbed = convert([str(broken)], str(tmp_path / "perturbed.zarr"), progress=False)
    results = verify_store(perturbed.path)
    assert [r.success for r in results] == [True, False, True]
    assert results[1].drift_max > results[0].drift_max
    assert verify_main([perturbed.path, "max_episodes=2"]) == 0
    printed = capsys.readouterr().out
    assert "FAILED" in printed and "replayed 2 episode(s): 1 reach success (50%)" in printed


def test_converted_store_exports_and_converts_back_exactly(tmp_path):
    src = robomimic_lift_file(tmp_path / "image.hdf5")
    first = convert([str(src)], str(tmp_path / "a.zarr"), progress=False)
    out = export_robomimic(first.path, str(tmp_path / "again.hdf5"), next_obs=False)
    with h5py.File(out, "r") as f:
        assert "next_obs" not in f["data/demo_0"] and f["data/demo_0/obs/agentview_image"].dtype == np.uint8
        with h5py.File(src, "r") as orig:  # robomimic's own names and the original env_args survive
            assert sorted(f["data/demo_0/obs"]) == sorted(orig["data/demo_0/obs"])
            np.testing.assert_array_equal(f["data/demo_2/dones"][()], orig["data/demo_2/dones"][()])
            assert json.loads(f["data"].attrs["env_args"]) == json.loads(orig["data"].attrs["env_args"])
    again = convert([out], str(tmp_path / "b.zarr"), progress=False)
    _assert_same_store(first, again)
    assert again.tasks == first.tasks


def test_export_refuses_what_it_cannot_write(make_store, tmp_path, lift_store, capsys):
    multi = make_store(4, n_tasks=2)
    assert verify_main([multi.path]) == 1  # a store without flat states cannot be replayed: one line
    assert "has no 'states' key; verify replays flat simulator states" in capsys.readouterr().err
    with pytest.raises(ExportError, match=r"holds 2 tasks \['task0', 'task1'\].*task=NAME"):
        export_robomimic(multi.path, str(tmp_path / "m.hdf5"))
    one = export_robomimic(multi.path, str(tmp_path / "m.hdf5"), task="task1")
    with h5py.File(one, "r") as f:
        assert len(f["data"]) == 2 and json.loads(f["data"].attrs["env_args"])["env_name"] == "task1"
    with pytest.raises(ExportError, match="has no task 'nope'"):
        export_robomimic(multi.path, str(tmp_path / "n.hdf5"), task="nope")
    (tmp_path / "taken.hdf5").write_text("a user's file")
    assert main([lift_store.path, f"out={tmp_path / 'taken.hdf5'}", "format=robomimic"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "taken.hdf5").read_text() == "a user's file"
    assert main([lift_store.path, f"out={tmp_path / 'x.hdf5'}", "format=csv"]) == 1
    assert "format must be robomimic or lerobot" in capsys.readouterr().err
