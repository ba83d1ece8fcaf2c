"""Tiny source files in each HDF5 layout the converters read, written with h5py (never downloaded)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

LIFT_ENV_ARGS = {
    "env_name": "Lift", "env_version": "1.5.1", "type": 1,
    "env_kwargs": {"robots": ["Panda"], "control_freq": 20, "has_renderer": False, "has_offscreen_renderer": True,
                   "use_camera_obs": True, "camera_names": ["agentview"], "camera_heights": 16, "camera_widths": 16,
                   "reward_shaping": False,
                   "controller_configs": {"type": "BASIC", "body_parts": {"right": {"type": "OSC_POSE"}}}},
}


def pattern_frames(rng: np.random.Generator, length: int, size: int) -> np.ndarray:
    """Frames whose top rows are bright and bottom rows dark, so an upside-down frame is detectable."""
    frames = rng.integers(0, 100, size=(length, size, size, 3), dtype=np.uint8)
    frames[:, : size // 2] += 150
    return frames


def write_demos(path: Path, demos: list[dict[str, Any]], attrs: dict[str, Any], masks: dict | None = None) -> Path:
    """demos: [{"actions", "obs": {k: v}, "states", "rewards", "dones", "attrs": {...}}] (all optional but actions)."""
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        for k, v in attrs.items():
            data.attrs[k] = v
        for i, demo in enumerate(demos):
            g = data.create_group(f"demo_{i}")
            g.attrs["num_samples"] = len(demo["actions"])
            for k, v in demo.get("attrs", {}).items():
                g.attrs[k] = v
            g.create_dataset("actions", data=demo["actions"])
            for k, v in demo.get("obs", {}).items():
                g.create_dataset(f"obs/{k}", data=v)
            for k in ("states", "rewards", "dones"):
                if k in demo:
                    g.create_dataset(k, data=demo[k])
        for name, demo_ids in (masks or {}).items():
            f.create_dataset(f"mask/{name}", data=np.array([f"demo_{i}".encode() for i in demo_ids]))
    return path


def robomimic_demo(rng: np.random.Generator, length: int, image_size: int = 16) -> dict[str, Any]:
    rewards = np.zeros(length)
    rewards[-1] = 1.0
    dones = np.zeros(length, dtype=np.int64)
    dones[-1] = 1
    return {
        "actions": rng.uniform(-1, 1, size=(length, 7)),
        "obs": {"object": rng.normal(size=(length, 10)), "robot0_eef_pos": rng.normal(size=(length, 3)),
                "robot0_eef_quat": rng.normal(size=(length, 4)), "robot0_gripper_qpos": rng.normal(size=(length, 2)),
                "robot0_eef_vel_lin": rng.normal(size=(length, 3)),  # written by older robosuite, not by 1.5.1
                "agentview_image": pattern_frames(rng, length, image_size)},
        "states": rng.normal(size=(length, 20)), "rewards": rewards, "dones": dones,  # not our Lift's 32
    }


def robomimic_lift_file(path: Path, lengths=(6, 4, 5), env_args: dict | None = None, seed: int = 0) -> Path:
    """A robomimic image.hdf5-like Lift file: low-dim keys + agentview, env_args, mask/train + mask/valid."""
    rng = np.random.default_rng(seed)
    demos = [robomimic_demo(rng, n) for n in lengths]
    args = LIFT_ENV_ARGS if env_args is None else env_args
    return write_demos(path, demos, {"env_args": json.dumps(args), "total": sum(lengths)},
                       masks={"train": [0, 2], "valid": [1]})


def libero_file(path: Path, instruction: str, lengths=(5, 3), size: int = 12, seed: int = 0,
                convention: str | None = None) -> tuple[Path, list[dict[str, np.ndarray]]]:
    """A LIBERO-layout file (frames stored upside down); returns it and each demo's *upright* frames."""
    rng = np.random.default_rng(seed)
    demos, upright = [], []
    for n in lengths:
        agent, wrist = pattern_frames(rng, n, size), pattern_frames(rng, n, size)
        upright.append({"agentview_image": agent, "eye_in_hand_image": wrist})
        flip = (lambda x: x) if convention == "opencv" else (lambda x: x[:, ::-1])
        demos.append({"actions": rng.uniform(-1, 1, size=(n, 7)),
                      "obs": {"agentview_rgb": flip(agent), "eye_in_hand_rgb": flip(wrist),
                              "ee_pos": rng.normal(size=(n, 3)), "ee_ori": rng.normal(size=(n, 3)),
                              "gripper_states": rng.normal(size=(n, 2)), "joint_states": rng.normal(size=(n, 7))},
                      "states": rng.normal(size=(n, 40)), "rewards": np.eye(n)[-1], "dones": np.eye(n)[-1]})
    attrs = {"problem_info": json.dumps({"problem_name": "libero_tabletop_manipulation", "domain_name": "x",
                                         "language_instruction": instruction}),
             "env_args": json.dumps({"env_name": "Libero_Tabletop_Manipulation", "env_kwargs": {}})}
    if convention is not None:
        attrs["macros_image_convention"] = convention
    return write_demos(path, demos, attrs), upright


def robosuite_raw_file(path: Path, episodes: list[dict[str, np.ndarray]], model_xml: str | None,
                       env: str = "Lift") -> Path:
    """robosuite's own demo format: states + actions per demo, model_file, env / repository_version."""
    demos = [{"actions": ep["action"].astype(np.float64), "states": ep["states"].astype(np.float64),
              "attrs": {"model_file": model_xml} if model_xml else {}} for ep in episodes]
    info = {"robots": "Panda", "control_freq": 20,
            "controller_configs": {"type": "BASIC", "body_parts": {"right": {"type": "OSC_POSE"}}}}
    return write_demos(path, demos, {"env": env, "env_info": json.dumps(info), "repository_version": "1.4.1",
                                     "date": "1-1-2024", "time": "12:00:00"})
