"""Export a demo store for other frameworks.

    python -m data.export STORE out=FILE format=robomimic|lerobot [task=NAME] [next_obs=true]
    python -m data.export STORE out=DIR format=lerobot [video_codec=libx264rgb] [fps=20] [robot_type=NAME]

format=robomimic writes robomimic's HDF5 layout, readable by its SequenceDataset loader:
    data/demo_<i>/{actions, obs/<key>, next_obs/<key>, states, rewards, dones}, attrs num_samples
    (and model_file: the MuJoCo model of our env, for robomimic's replay tools), data.attrs total and
    env_args (JSON; env_name, env_version, type, env_kwargs; a store converted from robomimic keeps
    the file's own). Store keys are renamed to robomimic's
    (`object-state` -> `object`). `rewards` / `dones` are the store's `reward` / `done` when it has them
    (a converted store), else derived from the episode's success flag (sparse: 1 on the last step of a
    successful episode; dones 1 on the last step). `next_obs` is obs shifted by one step, its last
    entry repeating the last observation (the store keeps no observation after the final action).
    No mask/ is written. The store's own task list is kept in data.attrs["mode_il"], so converting the
    file back (python -m data.convert FILE out=...) reproduces every array and task exactly.
format=lerobot writes a LeRobot v3.0 directory (data/export_lerobot.py): video_codec libx264rgb (the
default, lossless), libsvtav1 (LeRobot's own AV1) or libx264 (both lossy); fps (default 20); robot_type
(default: the robot the env spec names).
The output is written beside its final name and renamed into place, and never replaces a file.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from typing import Any

import numpy as np

from data.cli_args import key_values, parse_bool
from data.store import DemoStore, StoreError, is_image_key

OWN_KEYS = ("action", "states", "reward", "done")  # store keys that are not observations


class ExportError(ValueError):
    """An export that cannot be done as asked; the message says what to do."""


def robomimic_env_args(task: dict[str, Any]) -> dict[str, Any]:
    """robomimic's env_args for a task: a robosuite env robomimic can rebuild, else the name only."""
    spec = task.get("env_spec") or {}
    if spec.get("simulator") != "robosuite":
        # robomimic's type 2 is a gym env; it cannot build this one, but its loaders need no env.
        return {"env_name": task["name"], "type": 2, "env_kwargs": {}}
    import robosuite

    from envs.robosuite_env import CONTROL_FREQ, _controller_config

    cams = list(spec.get("cameras") or [])
    kwargs = {"robots": [spec["robot"]], "controller_configs": _controller_config(spec["robot"], spec["controller"]),
              "control_freq": CONTROL_FREQ, "has_renderer": False, "has_offscreen_renderer": bool(cams),
              "use_camera_obs": bool(cams), "use_object_obs": True, "camera_names": cams,
              "camera_heights": spec["image_size"], "camera_widths": spec["image_size"], "camera_depths": False,
              "reward_shaping": False, "ignore_done": True}
    return {"env_name": spec["task"], "env_version": robosuite.__version__, "type": 1, "env_kwargs": kwargs}


def _env_args(store: DemoStore, task: dict[str, Any]) -> dict[str, Any]:
    """A store converted from robomimic gives back the env_args it came with; others get ours."""
    source = store.attrs.get("source") or {}
    if store.origin.get("format") == "robomimic" and isinstance(source.get("env_args"), dict):
        return source["env_args"]
    return robomimic_env_args(task)


def _model_xml(task: dict[str, Any]) -> str | None:
    """The MuJoCo model our env builds for the task (the same for every episode: no hard resets)."""
    spec = task.get("env_spec") or {}
    if spec.get("simulator") != "robosuite":
        return None
    from envs.factory import make_env

    env = make_env({**spec, "cameras": [], "state_keys": []})
    try:
        return env.sim.model.get_xml()
    finally:
        env.close()


def export_robomimic(store_path: str, out: str, task: str | None = None, next_obs: bool = True) -> str:
    """Write the store (or one task of it) as a robomimic HDF5 file at `out`; returns `out`."""
    import h5py

    from data.convert.robomimic import EXPORT_ATTR, STORE_TO_ROBOMIMIC

    store = DemoStore.open(store_path, "r")
    names = [t["name"] for t in store.tasks]
    if task is None and len(names) > 1:
        raise ExportError(f"store {store_path!r} holds {len(names)} tasks {names}; a robomimic file holds one env: "
                          "export them one at a time with task=NAME")
    if task is not None and task not in names:
        raise ExportError(f"store {store_path!r} has no task {task!r}; its tasks: {names}")
    t_index = names.index(task) if task is not None else 0
    entry = store.tasks[t_index]
    episodes = [i for i in range(store.n_episodes) if store.episode_task[i] == t_index]
    if not episodes:
        raise ExportError(f"store {store_path!r} has no episodes of task {names[t_index]!r}")
    if os.path.exists(out):
        raise ExportError(f"{out} already exists; choose another out= (an export never replaces a file)")
    obs_keys = [k for k in store.keys if k not in OWN_KEYS]
    model_xml = _model_xml(entry) if "states" in store.keys else None
    partial = f"{out}.partial"
    try:
        with h5py.File(partial, "w") as f:
            data = f.create_group("data")
            total = 0
            for n, i in enumerate(episodes):
                ep = store.get_episode(i)
                total += _write_demo(data.create_group(f"demo_{n}"), ep, obs_keys, STORE_TO_ROBOMIMIC,
                                     bool(store.episode_success[i]), next_obs, model_xml)
            data.attrs["total"] = total
            data.attrs["env_args"] = json.dumps(_env_args(store, entry))
            data.attrs[EXPORT_ATTR] = json.dumps({"tasks": [entry], "action_space": store.action_space,
                                                  "exported_from": os.path.abspath(store_path)})
        os.replace(partial, out)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return out


def _write_demo(g, ep: dict[str, np.ndarray], obs_keys: list[str], renames: dict[str, str], success: bool,
                next_obs: bool, model_xml: str | None) -> int:
    length = len(ep["action"])
    g.attrs["num_samples"] = length
    if model_xml is not None:
        g.attrs["model_file"] = model_xml
    g.create_dataset("actions", data=ep["action"])
    for key in obs_keys:
        value = ep[key]
        image = is_image_key(key, value)
        opts = {"compression": "gzip", "compression_opts": 4} if image else {}  # lossless
        g.create_dataset(f"obs/{renames.get(key, key)}", data=value, **opts)
        if next_obs:
            shifted = np.concatenate([value[1:], value[-1:]])
            g.create_dataset(f"next_obs/{renames.get(key, key)}", data=shifted, **opts)
    if "states" in ep:
        g.create_dataset("states", data=ep["states"].astype(np.float64))
    if "reward" in ep:
        rewards = ep["reward"].astype(np.float64)
    else:
        rewards = np.zeros(length)
        rewards[-1] = float(success)
    g.create_dataset("rewards", data=rewards)
    if "done" in ep:
        dones = ep["done"].astype(np.int64)
    else:
        dones = np.zeros(length, dtype=np.int64)
        dones[-1] = 1
    g.create_dataset("dones", data=dones)
    return length


# The key=value options of each format (besides out= and format=), as the command line takes them.
FORMAT_OPTIONS = {"robomimic": ("task", "next_obs"), "lerobot": ("video_codec", "fps", "robot_type")}
USAGE = ("usage: python -m data.export STORE out=FILE format=robomimic|lerobot "
         "[robomimic: task=NAME next_obs=true] [lerobot: video_codec=libx264rgb|libsvtav1|libx264 fps=20 "
         "robot_type=NAME]")


def export(store_path: str, out: str, format: str, **options: Any) -> str:
    if format not in FORMAT_OPTIONS:
        raise ExportError(f"format must be robomimic or lerobot, got {format!r}")
    wrong = sorted(set(options) - set(FORMAT_OPTIONS[format]))
    if wrong:
        raise ExportError(f"format={format} takes the options {', '.join(FORMAT_OPTIONS[format])}, not {wrong}")
    parent = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(parent, exist_ok=True)  # `out=exports/lift.hdf5` in a fresh clone
    except OSError as err:
        raise ExportError(f"out={out}: cannot create {parent}: {err.strerror}") from None
    if format == "robomimic":
        return export_robomimic(store_path, out, **options)
    if importlib.util.find_spec("data.export_lerobot") is None:
        raise ExportError("LeRobot export lives in data/export_lerobot.py, which this installation lacks")
    from data.export_lerobot import export_lerobot

    export_lerobot(store_path, out, **options)
    return out


def _typed(args: dict[str, str]) -> dict[str, Any]:
    """Command-line texts -> export() values (a ValueError naming the key for a bad one)."""
    typed: dict[str, Any] = dict(args)
    if "next_obs" in args:
        typed["next_obs"] = parse_bool("next_obs", args["next_obs"])
    if "fps" in args:
        try:
            typed["fps"] = int(args["fps"])
        except ValueError:
            raise ValueError(f"fps must be a positive integer, got {args['fps']!r}") from None
    return typed


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        return 2
    known = ("out", "format", *{k for keys in FORMAT_OPTIONS.values() for k in keys})
    try:
        args = _typed(key_values(argv[1:], known, USAGE))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if "out" not in args or "format" not in args:
        print(f"error: out= and format= are required; {USAGE}", file=sys.stderr)
        return 2
    try:
        out = export(argv[0], args.pop("out"), args.pop("format"), **args)
    except (ExportError, StoreError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    # Through the importable module, not __main__: data/export_lerobot.py raises data.export.ExportError,
    # which a `python -m` run's own copy of the class (__main__.ExportError) would not catch.
    from data.export import main as _main

    sys.exit(_main())
