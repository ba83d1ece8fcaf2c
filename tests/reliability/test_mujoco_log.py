"""MuJoCo's warnings go to logging, never to MUJOCO_LOG.TXT in the working directory (issue #35)."""

from __future__ import annotations

import logging

import numpy as np


def test_an_unstable_simulation_writes_no_log_file_into_the_working_directory(tmp_path, monkeypatch, caplog):
    import mujoco

    from envs import mujoco_log
    from envs.mujoco_log import route_mujoco_warnings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(mujoco_log, "_seen", set())  # once per process: start this test's process afresh
    previous = mujoco.get_mju_user_warning()
    route_mujoco_warnings()  # what envs.factory.make_env does before building any simulator
    try:
        model = mujoco.MjModel.from_xml_string(
            '<mujoco><worldbody><body><freejoint/><geom size="0.1"/></body></worldbody></mujoco>')
        data = mujoco.MjData(model)
        data.qvel[:] = np.nan  # what NaN controls lead to
        with caplog.at_level(logging.WARNING, logger="mujoco"):
            for _ in range(3):
                mujoco.mj_step(model, data)
    finally:
        mujoco.set_mju_user_warning(previous)
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    warnings = [r.getMessage() for r in caplog.records if r.name == "mujoco"]
    assert len(warnings) == 1 and "Nan, Inf or huge value in QVEL" in warnings[0]  # once, not every step
