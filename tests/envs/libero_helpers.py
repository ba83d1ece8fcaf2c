"""Shared by the LIBERO tests: the skip when the LIBERO environment is absent, and a writer of LIBERO
dataset files in the official layout (LIBERO's scripts/create_dataset.py), fed by the live env."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from envs.libero_process import INSTALL_HINT, libero_available

needs_libero = pytest.mark.skipif(not libero_available(),
                                  reason=f"the LIBERO environment is not installed (`{INSTALL_HINT}`; make test does)")


def quat2axisangle(quat: np.ndarray) -> np.ndarray:
    """(x, y, z, w) -> axis * angle, the conversion create_dataset.py applies to robot0_eef_quat."""
    w = float(np.clip(quat[3], -1.0, 1.0))
    den = math.sqrt(1.0 - w * w)
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return np.asarray(quat[:3], dtype=np.float64) * 2.0 * math.acos(w) / den


def record_official_file(env, path: Path, actions: np.ndarray, bddl_file_name: str | None) -> dict:
    """Step `env` (a LiberoEnv with both cameras, already reset) through `actions` and write what LIBERO's
    own observation holds after each step into `path`, laid out as the official datasets are: raw (upside
    down) frames as agentview_rgb / eye_in_hand_rgb, the robot state keys computed from robot0_* keys.
    Returns the live env's observations and the flat states, for comparison."""
    import h5py

    raw_steps, live, states = [], [], []
    for action in actions:
        obs, *_ = env.step(action)
        live.append(obs)
        raw_steps.append(env.raw_observation())
        states.append(env.get_flat_state())
    ee = np.stack([np.concatenate([r["robot0_eef_pos"], quat2axisangle(r["robot0_eef_quat"])]) for r in raw_steps])
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["problem_info"] = json.dumps({"problem_name": "libero_tabletop_manipulation",
                                                 "domain_name": "robosuite", "language_instruction": env.instruction})
        data.attrs["macros_image_convention"] = "opengl"
        data.attrs["env_name"] = "Libero_Tabletop_Manipulation"
        if bddl_file_name is not None:
            data.attrs["bddl_file_name"] = bddl_file_name
        demo = data.create_group("demo_0")
        obs = demo.create_group("obs")
        obs["agentview_rgb"] = np.stack([r["agentview_image"] for r in raw_steps])
        obs["eye_in_hand_rgb"] = np.stack([r["robot0_eye_in_hand_image"] for r in raw_steps])
        obs["gripper_states"] = np.stack([r["robot0_gripper_qpos"] for r in raw_steps])
        obs["joint_states"] = np.stack([r["robot0_joint_pos"] for r in raw_steps])
        obs["ee_states"], obs["ee_pos"], obs["ee_ori"] = ee, ee[:, :3], ee[:, 3:]
        demo["actions"] = actions
        demo["states"] = np.stack(states)
        demo["rewards"] = np.eye(len(actions), dtype=np.uint8)[-1]
        demo["dones"] = np.eye(len(actions), dtype=np.uint8)[-1]
    return {"live": live, "states": np.stack(states), "raw": raw_steps}
