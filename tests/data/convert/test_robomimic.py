"""robomimic HDF5 -> demo store: arrays, tasks, env spec, options, resuming, interrupts."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from data.convert import cli
from data.convert.cli import convert, main
from data.convert.source import ConvertError
from data.inspect import describe
from data.store import DemoStore
from tests.data.convert.writers import LIFT_ENV_ARGS, robomimic_lift_file

RENAMES = {"object": "object-state"}


def _source(path, demo):
    with h5py.File(path, "r") as f:
        g = f[f"data/{demo}"]
        return {"actions": g["actions"][()], "states": g["states"][()], "rewards": g["rewards"][()],
                "dones": g["dones"][()], "obs": {k: g["obs"][k][()] for k in g["obs"]}}


def test_lift_file_with_mask_converts_array_for_array(tmp_path, capsys):
    src = robomimic_lift_file(tmp_path / "image.hdf5")
    store = convert([str(src)], str(tmp_path / "s.zarr"), filter="train", progress=False)
    assert "robot0_eef_vel_lin" in capsys.readouterr().err  # not emitted by robosuite 1.5.1: said once
    assert store.n_episodes == 2 and store.episode_lengths.tolist() == [6, 5]  # mask/train = demo_0, demo_2
    for i, demo in enumerate(["demo_0", "demo_2"]):
        want, got = _source(src, demo), store.get_episode(i)
        np.testing.assert_array_equal(got["action"], want["actions"].astype(np.float32))
        np.testing.assert_array_equal(got["states"], want["states"].astype(np.float32))
        np.testing.assert_array_equal(got["reward"], want["rewards"].astype(np.float32))
        np.testing.assert_array_equal(got["done"], want["dones"].astype(np.float32))
        for k, v in want["obs"].items():
            expected = v if v.dtype == np.uint8 else v.astype(np.float32)
            np.testing.assert_array_equal(got[RENAMES.get(k, k)], expected, err_msg=k)
    task = store.tasks[0]
    assert task["name"] == "lift" and task["instruction"] == "pick up the red cube and lift it"
    spec = task["env_spec"]
    assert (spec["simulator"], spec["task"], spec["robot"], spec["controller"]) == ("robosuite", "Lift", "Panda",
                                                                                     "OSC_POSE")
    assert spec["cameras"] == ["agentview"] and spec["image_size"] == 16
    assert sorted(spec["state_keys"]) == ["object-state", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"]
    assert store.origin == {"kind": "converted", "format": "robomimic", "sources": [str(src.resolve())],
                            "options": {"filter": "train"}}
    assert store.attrs["source"]["robosuite_version"] == "1.5.1"
    assert store.attrs["source"]["episodes"] == ["demo_0", "demo_2"]
    text = describe(store.path)
    assert "episodes   2" in text and "object-state" in text and "agentview_image" in text
    assert '"pick up the red cube and lift it"' in text


def test_options_select_rename_resize_and_cap(tmp_path):
    src = robomimic_lift_file(tmp_path / "image.hdf5")
    store = convert([str(src)], str(tmp_path / "s.zarr"), obs_keys=["object-state", "robot0_eef_pos"],
                    cameras=["agentview"], obs_map={"agentview_image": "front_image"}, image_size=8,
                    max_episodes=2, progress=False)
    assert store.keys == ["action", "done", "front_image", "object-state", "reward", "robot0_eef_pos", "states"]
    assert store.n_episodes == 2
    frames = store.get_episode(0)["front_image"]
    assert frames.shape == (6, 8, 8, 3) and frames.dtype == np.uint8
    # The source's frames are bright on top: resizing keeps that.
    assert frames[:, :4].mean() > frames[:, 4:].mean() + 100
    low = convert([str(src)], str(tmp_path / "low.zarr"), cameras=[], progress=False)
    assert not any(k.endswith("_image") for k in low.keys) and low.tasks[0]["env_spec"]["cameras"] == []


def test_unknown_env_converts_without_env_spec_and_says_so(tmp_path, capsys):
    args = {**LIFT_ENV_ARGS, "env_name": "ToolHang"}
    src = robomimic_lift_file(tmp_path / "tool_hang.hdf5", env_args=args)
    store = convert([str(src)], str(tmp_path / "s.zarr"), progress=False)
    err = capsys.readouterr().err
    assert err.count("'ToolHang' is not one we simulate") == 1 and "without an env spec" in err
    assert store.tasks[0]["name"] == "ToolHang" and store.tasks[0]["env_spec"] == {}
    assert store.n_episodes == 3


def test_rerun_tops_up_and_refuses_other_sources_or_options(tmp_path):
    src = robomimic_lift_file(tmp_path / "a.hdf5")
    out = str(tmp_path / "s.zarr")
    assert convert([str(src)], out, max_episodes=1, progress=False).n_episodes == 1
    assert convert([str(src)], out, max_episodes=3, progress=False).n_episodes == 3
    store = convert([str(src)], out, progress=False)  # nothing left to add
    assert store.n_episodes == 3 and store.attrs["source"]["episodes"] == ["demo_0", "demo_1", "demo_2"]
    np.testing.assert_array_equal(store.get_episode(2)["action"],
                                  _source(src, "demo_2")["actions"].astype(np.float32))
    with pytest.raises(ConvertError, match="was converted from .* choose another out= or delete it"):
        convert([str(src)], out, cameras=[], progress=False)
    other = robomimic_lift_file(tmp_path / "b.hdf5", seed=1)
    with pytest.raises(ConvertError, match="was converted from"):
        convert([str(other)], out, progress=False)
    assert DemoStore.open(out).n_episodes == 3


def test_ctrl_c_leaves_a_valid_store_that_a_rerun_completes(tmp_path, monkeypatch, capsys):
    src = robomimic_lift_file(tmp_path / "a.hdf5")
    out = str(tmp_path / "s.zarr")
    real = DemoStore.append_episode
    calls = {"n": 0}

    def interrupted(self, episode, **kw):
        calls["n"] += 1
        if calls["n"] == 2:  # mid-append of the second episode: rows written, not committed
            self._root["data"]["action"].resize((self.n_steps + 3, 7))
            raise KeyboardInterrupt
        return real(self, episode, **kw)

    monkeypatch.setattr(DemoStore, "append_episode", interrupted)
    assert main([str(src), f"out={out}"]) == 130
    assert "keeps 1 complete episodes" in capsys.readouterr().err
    monkeypatch.setattr(DemoStore, "append_episode", real)
    assert DemoStore.open(out).n_episodes == 1
    store = convert([str(src)], out, progress=False)
    assert store.n_episodes == 3 and store.array("action").shape[0] == store.n_steps == 15


def test_cli_parses_options_and_prints_a_summary(tmp_path, capsys):
    src = robomimic_lift_file(tmp_path / "a.hdf5")
    out = tmp_path / "s.zarr"
    assert main([str(src), f"out={out}", "format=robomimic", "obs_keys=[object,robot0_eef_pos]", "cameras=",
                 "max_episodes=2", "filter=valid"]) == 0
    printed = capsys.readouterr().out
    assert "1 episodes" in printed and "tasks: lift" in printed  # mask/valid holds demo_1 only
    store = DemoStore.open(out)
    assert store.keys == ["action", "done", "object-state", "reward", "robot0_eef_pos", "states"]
    sources, args = cli.parse_args([str(src), "out=x", "obs_map=a:b,c:d", "verify=true", "workers=2"])
    assert sources == [str(src)] and args["obs_map"] == {"a": "b", "c": "d"} and args["verify"] is True
    assert json.loads(json.dumps(store.origin))["options"]["obs_keys"] == ["object", "robot0_eef_pos"]


def test_smoke_training_on_a_converted_store(tmp_path):
    import torch

    from tests.training.helpers import compose_cfg
    from train import train

    src = robomimic_lift_file(tmp_path / "image.hdf5", lengths=(12, 10, 11, 12))
    store = convert([str(src)], str(tmp_path / "s.zarr"), progress=False)
    cfg = compose_cfg(store.path, extra=["task.obs_keys=[robot0_eef_pos,object-state]", "trainer.max_steps=4",
                                         "trainer.val_check_interval=2"])
    run = train(cfg, tmp_path / "run")
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4 and ckpt["dataset"]["tasks"][0]["env_spec"]["task"] == "Lift"
