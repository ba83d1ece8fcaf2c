"""States-and-actions files (robosuite's own demo format) -> observations by replaying the states here."""

from __future__ import annotations

import numpy as np
import pytest

from data.convert.cli import convert, detect_format
from data.convert.robosuite_raw import localize_model_xml, missing_assets
from data.convert.source import ConvertError
from envs.factory import make_env
from tests.data.convert.writers import robosuite_raw_file

ELSEWHERE = "/home/someone/code/robosuite/robosuite/models/assets/"


def _model_xml_from_elsewhere(spec: dict) -> str:
    """Our Lift model as another machine would have recorded it: asset paths under its own checkout."""
    import os

    import robosuite

    env = make_env({**spec, "cameras": []})
    try:
        xml = env.sim.model.get_xml()
    finally:
        env.close()
    here = os.path.join(os.path.dirname(robosuite.__file__), "models", "assets") + "/"
    assert here in xml
    return xml.replace(here, ELSEWHERE)


def test_states_replayed_into_observations_and_frames(lift_store, tmp_path, capsys):
    episodes = [lift_store.get_episode(i) for i in range(lift_store.n_episodes)]
    spec = lift_store.tasks[0]["env_spec"]
    xml = _model_xml_from_elsewhere(spec)
    assert localize_model_xml(xml).count(ELSEWHERE) == 0
    src = robosuite_raw_file(tmp_path / "demo.hdf5", episodes, xml)
    assert detect_format([str(src)]) == "robosuite"
    store = convert([str(src)], str(tmp_path / "s.zarr"), cameras=["agentview"], image_size=32, progress=False)
    out = capsys.readouterr().out
    assert "replayed 3 episode(s): 3 reach success (100%)" in out  # our expert's actions still work here
    assert store.n_episodes == 3 and store.episode_success.all()
    assert store.tasks[0]["name"] == "lift" and store.tasks[0]["env_spec"]["cameras"] == ["agentview"]
    assert store.attrs["source"]["robosuite_version"] == "1.4.1"
    for i, ep in enumerate(episodes):
        got = store.get_episode(i)
        np.testing.assert_array_equal(got["action"], ep["action"])
        np.testing.assert_array_equal(got["states"], ep["states"])
        for k in ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object-state"):
            # A restored reset state observes what was recorded, to the float32 rounding of stored states.
            np.testing.assert_allclose(got[k][0], ep[k][0], atol=1e-6)
            # Later steps: the recorded observations were read right after a physics step, before
            # MuJoCo recomputed the derived positions; a restored state recomputes them (< 1 mm apart).
            np.testing.assert_allclose(got[k], ep[k], atol=2e-3, err_msg=k)
        frames = got["agentview_image"]
        assert frames.shape == (len(ep["action"]), 32, 32, 3) and frames.std() > 10
    one = convert([str(src)], str(tmp_path / "own_model.zarr"), model_file=False, max_episodes=1, progress=False)
    np.testing.assert_allclose(one.get_episode(0)["object-state"], episodes[0]["object-state"], atol=2e-3)


def test_inconsistent_or_foreign_state_files_fail_clearly(lift_store, tmp_path):
    ep = lift_store.get_episode(0)
    short = {**ep, "states": ep["states"][:, :20]}  # another robot/object model's state size
    src = robosuite_raw_file(tmp_path / "foreign.hdf5", [short], None)
    with pytest.raises(ConvertError, match=r"foreign.hdf5:data/demo_0: a flat Lift state here has 1 \+ nq \+ nv = 32"):
        convert([str(src)], str(tmp_path / "x.zarr"), progress=False)
    assert not (tmp_path / "x.zarr").exists()
    with pytest.raises(ConvertError, match=r"unknown state keys \['cube_size'\].*options obs_keys="):
        convert([str(robosuite_raw_file(tmp_path / "ok.hdf5", [ep], None))], str(tmp_path / "x.zarr"),
                obs_keys=["cube_size"], progress=False)


def test_model_files_naming_assets_this_robosuite_lacks_fall_back_to_our_model(lift_store, tmp_path, capsys):
    """robosuite 1.4's collection script records model files naming meshes 1.5 no longer ships: the default
    (model_file=true) replays those demos in our own model, and says so in one line."""
    episodes = [lift_store.get_episode(i) for i in range(2)]
    xml = _model_xml_from_elsewhere(lift_store.tasks[0]["env_spec"])
    gone = "mounts/meshes/rethink_mount/pedestal.stl"  # in robosuite 1.4.0's assets, not in 1.5.1's
    old_xml = xml.replace("robots/panda/meshes/link0.stl", gone, 1)
    missing = missing_assets(localize_model_xml(old_xml))
    assert len(missing) == 1 and missing[0].endswith("/robosuite/models/assets/" + gone)
    assert missing_assets(localize_model_xml(xml)) == []
    src = robosuite_raw_file(tmp_path / "demo_1_4.hdf5", episodes, old_xml)
    store = convert([str(src)], str(tmp_path / "s.zarr"), progress=False)
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and gone in warnings[0] and "model_file=false" in warnings[0], err
    assert store.n_episodes == 2 and store.episode_success.all()
    source = store.attrs["source"]
    assert source["model_file"] is False and gone in source["model_file_fallback"]
    for i, ep in enumerate(episodes):
        got = store.get_episode(i)
        np.testing.assert_array_equal(got["states"], ep["states"])
        np.testing.assert_allclose(got["object-state"], ep["object-state"], atol=2e-3)
    # A model file whose assets are all here is still used, without a warning.
    convert([str(robosuite_raw_file(tmp_path / "here.hdf5", episodes[:1], xml))], str(tmp_path / "t.zarr"),
            progress=False)
    assert "warning:" not in capsys.readouterr().err
