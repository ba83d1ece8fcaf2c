"""LIBERO HDF5 suites -> one store: a task per file with its instruction, frames turned upright."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from data.convert.cli import convert, detect_format
from data.convert.source import ConvertError
from data.inspect import describe
from tests.data.convert.writers import libero_file

LOWDIM = ("ee_pos", "ee_ori", "gripper_states", "joint_states")


def _suite(folder):
    folder.mkdir()
    a, up_a = libero_file(folder / "KITCHEN_SCENE1_open_the_top_drawer_demo.hdf5", "open the top  drawer")
    b, up_b = libero_file(folder / "LIVING_ROOM_SCENE2_pick_up_the_ketchup_demo.hdf5", "pick up the ketchup",
                          lengths=(4,), seed=1)
    return [a, b], up_a + up_b


def test_a_suite_folder_becomes_one_store_with_a_task_per_file(tmp_path):
    files, upright = _suite(tmp_path / "libero_goal")
    assert detect_format([str(tmp_path / "libero_goal")]) == "libero"
    store = convert([str(tmp_path / "libero_goal")], str(tmp_path / "s.zarr"), progress=False)
    assert [t["name"] for t in store.tasks] == ["KITCHEN_SCENE1_open_the_top_drawer",
                                                "LIVING_ROOM_SCENE2_pick_up_the_ketchup"]
    assert [t["instruction"] for t in store.tasks] == ["open the top drawer", "pick up the ketchup"]
    assert all(t["env_spec"] == {} for t in store.tasks)  # no LIBERO simulator here
    assert store.episode_task.tolist() == [0, 0, 1] and store.episode_lengths.tolist() == [5, 3, 4]
    sources = [(files[0], "demo_0"), (files[0], "demo_1"), (files[1], "demo_0")]
    for i, (path, demo) in enumerate(sources):
        got = store.get_episode(i)
        with h5py.File(path, "r") as f:
            g = f[f"data/{demo}"]
            np.testing.assert_array_equal(got["action"], g["actions"][()].astype(np.float32))
            np.testing.assert_array_equal(got["states"], g["states"][()].astype(np.float32))
            for k in LOWDIM:
                np.testing.assert_array_equal(got[k], g["obs"][k][()].astype(np.float32), err_msg=k)
            # stored upside down, converted upright
            np.testing.assert_array_equal(got["agentview_image"], g["obs/agentview_rgb"][()][:, ::-1])
        for k in ("agentview_image", "eye_in_hand_image"):
            np.testing.assert_array_equal(got[k], upright[i][k], err_msg=k)
    flips = store.attrs["source"]["frames_flipped"]
    assert flips == {"KITCHEN_SCENE1_open_the_top_drawer_demo.hdf5": "vertical",
                     "LIVING_ROOM_SCENE2_pick_up_the_ketchup_demo.hdf5": "vertical"}
    assert store.attrs["source"]["problem_info"][1]["language_instruction"] == "pick up the ketchup"
    text = describe(store.path)
    assert "episodes   3" in text and '"open the top drawer"' in text and "eye_in_hand_image" in text


def test_file_list_flip_options_and_opencv_files(tmp_path):
    files, upright = _suite(tmp_path / "suite")
    store = convert([str(files[1])], str(tmp_path / "one.zarr"), flip="none", progress=False)
    with h5py.File(files[1], "r") as f:
        np.testing.assert_array_equal(store.get_episode(0)["agentview_image"], f["data/demo_0/obs/agentview_rgb"][()])
    rot = convert([str(f) for f in files], str(tmp_path / "rot.zarr"), flip="rot180", cameras=["agentview"],
                  obs_map={"agentview_rgb": "front_image"}, progress=False)
    np.testing.assert_array_equal(rot.get_episode(0)["front_image"], upright[0]["agentview_image"][:, :, ::-1])
    assert "eye_in_hand_image" not in rot.keys and len(rot.tasks) == 2
    opencv, up = libero_file(tmp_path / "UPRIGHT_task_demo.hdf5", "stack", convention="opencv")
    store = convert([str(opencv)], str(tmp_path / "cv.zarr"), progress=False)
    np.testing.assert_array_equal(store.get_episode(0)["agentview_image"], up[0]["agentview_image"])
    assert store.attrs["source"]["frames_flipped"] == {"UPRIGHT_task_demo.hdf5": "none"}


def test_files_of_another_layout_or_shape_are_refused(tmp_path):
    files, _ = _suite(tmp_path / "suite")
    odd, _ = libero_file(tmp_path / "ODD_demo.hdf5", "odd", size=10)  # other frame size than the suite's 12
    with pytest.raises(ConvertError, match=r"ODD_demo.hdf5:data/demo_0/obs/agentview_rgb has per-step shape"):
        convert([str(files[0]), str(odd)], str(tmp_path / "x.zarr"), progress=False)
    assert not (tmp_path / "x.zarr").exists()
    with pytest.raises(ConvertError, match="flip must be one of vertical, rot180, none"):
        convert([str(files[0])], str(tmp_path / "x.zarr"), flip="sideways", progress=False)
    with pytest.raises(ConvertError, match="option flip= applies to format=libero only"):
        convert([str(files[0])], str(tmp_path / "x.zarr"), format="robomimic", flip="none", progress=False)


def test_smoke_training_on_a_converted_suite_with_images(tmp_path):
    import torch

    from tests.training.helpers import compose_cfg
    from train import train

    folder = tmp_path / "suite"
    folder.mkdir()
    for i, name in enumerate(["A_open_it_demo.hdf5", "B_close_it_demo.hdf5"]):
        libero_file(folder / name, name[2:-10].replace("_", " "), lengths=(12, 10), size=16, seed=i)
    store = convert([str(folder)], str(tmp_path / "s.zarr"), progress=False)
    cfg = compose_cfg(store.path, extra=["task.obs_keys=[ee_pos,agentview_image]", "trainer.max_steps=4",
                                         "trainer.val_check_interval=2"])
    run = train(cfg, tmp_path / "run")
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4 and [t["instruction"] for t in ckpt["dataset"]["tasks"]] == ["open it",
                                                                                                 "close it"]
