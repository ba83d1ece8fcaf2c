"""robomimic HDF5 (`low_dim.hdf5`, `image.hdf5`) -> episodes, with the env spec that evaluates them here.

Layout read: `data/demo_*/{actions, obs/*, states, rewards, dones}`, `data.attrs["env_args"]` (JSON:
env_name, env_version, env_kwargs with robots, controller_configs, control_freq, camera_*), `mask/*`.

Key differences between robomimic's observations and our robosuite wrapper's (robosuite 1.5.1):
- robomimic's `object` is robosuite's `object-state` (the same vector): renamed to `object-state`;
- robomimic's `robot0_eef_vel_lin` / `robot0_eef_vel_ang` (written by older robosuite) are not emitted
  by robosuite 1.5.1: they are kept in the store but left out of the env spec (a policy using them
  trains, but cannot be evaluated here; the conversion says so);
- camera frames `<camera>_image` have the same names and are stored upright by robomimic, as ours are.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from data.convert.hdf5 import DemoHdf5Reader, json_attr, text_attr
from data.convert.source import ConvertError, SourceTask

ROBOMIMIC_TO_STORE = {"object": "object-state"}
STORE_TO_ROBOMIMIC = {v: k for k, v in ROBOMIMIC_TO_STORE.items()}
EXPORT_ATTR = "mode_il"  # written by data.export: the store's own task list, for exact round trips


def load_env_args(attrs, path: str) -> dict[str, Any]:
    return json_attr(attrs, "env_args", path, "robomimic files describe their env there (a file without it is "
                     "not a robomimic dataset)", needs="env_name")


def controller_type(configs: Any) -> str | None:
    """The arm controller of robosuite <= 1.4 ({"type": "OSC_POSE"}) or 1.5 ({"body_parts": {"right": ...}})."""
    if not isinstance(configs, dict):
        return None
    parts = configs.get("body_parts")
    if isinstance(parts, dict) and parts:
        arm = parts.get("right") or next(iter(parts.values()))
        return arm.get("type") if isinstance(arm, dict) else None
    return configs.get("type")


def base_spec(env_name: str, env_kwargs: dict[str, Any], cameras: list[str], image_size: int):
    """(EnvSpec, "") for a robosuite task we simulate, else (None, why not)."""
    from envs.registry import robosuite_spec
    from envs.robosuite_env import CONTROL_FREQ, ROBOSUITE_TASKS

    if env_name not in ROBOSUITE_TASKS:
        return None, f"env {env_name!r} is not one we simulate (robosuite tasks here: {', '.join(ROBOSUITE_TASKS)})"
    robots = env_kwargs.get("robots", "Panda")
    robots = [robots] if isinstance(robots, str) else list(robots)
    if len(robots) != 1:
        return None, f"env {env_name!r} uses {len(robots)} robots {robots}; our wrapper drives one arm"
    freq = env_kwargs.get("control_freq", CONTROL_FREQ)
    if freq != CONTROL_FREQ:
        return None, f"env {env_name!r} was recorded at control_freq {freq}; our wrapper runs at {CONTROL_FREQ}"
    controller = controller_type(env_kwargs.get("controller_configs")) or "OSC_POSE"
    spec = robosuite_spec(env_name, robot=robots[0], controller=controller, cameras=cameras,
                          image_size=image_size, state_keys=[])
    return spec, ""


_PROBED: dict[str, tuple[dict[str, tuple], list[str]]] = {}


def probe_env(spec) -> tuple[dict[str, tuple], list[str]]:
    """What our env for `spec` emits: ({state key: shape}, camera names). Built once per process, state only."""
    key = json.dumps(spec.replace(cameras=[], state_keys=[], image_size=84).to_dict(), sort_keys=True)
    if key not in _PROBED:
        _PROBED[key] = _probe(spec)
    return _PROBED[key]


def _probe(spec) -> tuple[dict[str, tuple], list[str]]:
    from envs.factory import make_env

    try:
        env = make_env(spec.replace(cameras=[], state_keys=[]))
    except Exception as err:  # a robot or controller our robosuite lacks
        raise ConvertError(f"could not build our {spec.task} env for {spec.robot}/{spec.controller}: {err}") from None
    try:
        raw = env.unwrapped_robosuite._get_observations(force_update=True)
        keys = {k: np.shape(v) for k, v in raw.items() if not k.endswith("_image")}
        return keys, list(env.sim.model.camera_names)
    finally:
        env.close()


class RobomimicReader(DemoHdf5Reader):
    format = "robomimic"
    LOWDIM_RENAMES = ROBOMIMIC_TO_STORE

    def __init__(self, path: str, **options: Any) -> None:
        super().__init__([path], **options)
        try:
            self._setup(os.fspath(path))
        except BaseException:
            self.close()
            raise

    def _setup(self, path: str) -> None:
        attrs = self._files[0]["data"].attrs
        self.env_args = load_env_args(attrs, path)
        self.warnings: list[str] = []
        saved = text_attr(attrs, EXPORT_ATTR)
        if saved is not None:  # our own export: restore the store's tasks exactly
            info = json.loads(saved)
            self._tasks = [SourceTask(t["name"], t["instruction"], t.get("env_spec") or None) for t in info["tasks"]]
            self.action_space = dict(info.get("action_space") or {})
            return
        name = self.env_args["env_name"]
        self._tasks = [SourceTask(*self._task_for(name, path))]

    def _task_for(self, name: str, path: str) -> tuple[str, str, dict | None]:
        from envs.registry import ROBOSUITE_NAMES
        from envs.robosuite_env import INSTRUCTIONS

        short = {v: k for k, v in ROBOSUITE_NAMES.items()}.get(name, name)
        cams = [self.camera_name(k) for k, (dst, camera) in self._plan.items()
                if camera and dst == f"{self.camera_name(k)}_image"]
        renamed = [k for k, (dst, camera) in self._plan.items() if camera and dst != f"{self.camera_name(k)}_image"]
        first = self._files[0]["data"][self._index[0][1]]["obs"]
        sizes = sorted({tuple(first[k].shape[1:3]) for k, (_, camera) in self._plan.items() if camera})
        square = len(sizes) == 1 and sizes[0][0] == sizes[0][1]
        size = self.image_size or (sizes[0][0] if square else 84)
        spec, why = base_spec(name, dict(self.env_args.get("env_kwargs") or {}), cams, size)
        self.action_space: dict[str, Any] = {}
        if spec is None:
            self.warnings.append(f"{path}: {why}; converting without an env spec (training works, evaluation "
                                 "and verify need a simulated env)")
            return short, INSTRUCTIONS.get(name, ""), None
        if sizes and not square and not self.image_size:
            self.warnings.append(f"{path}: camera frames {sizes} are not one square size while our env renders "
                                 f"{size}x{size}; pass image_size=N so that evaluation sees what training saw")
        if renamed:
            self.warnings.append(f"{path}: camera key(s) {renamed} are renamed, so our env (which emits "
                                 "<camera>_image) cannot provide them: left out of the env spec")
        emitted, model_cams = probe_env(spec)
        lowdim = {dst: first[src].shape[1:]
                  for src, (dst, camera) in self._plan.items() if not camera}
        state_keys = [k for k, shape in lowdim.items() if emitted.get(k) == tuple(shape)]
        missing = sorted(set(lowdim) - set(state_keys))
        if missing:
            self.warnings.append(f"{path}: key(s) {missing} are not emitted (with that shape) by our {name} env; "
                                 "they are converted, but a policy that uses them cannot be evaluated here")
        bad_cams = [c for c in cams if c not in model_cams]
        if bad_cams:
            self.warnings.append(f"{path}: camera(s) {bad_cams} are not in our {name} model; left out of the env spec")
        spec = spec.replace(state_keys=state_keys, cameras=[c for c in cams if c in model_cams])
        self.action_space = {"low": [-1.0] * self._action_dim(), "high": [1.0] * self._action_dim(),
                             "controller": spec.controller}
        return short, INSTRUCTIONS.get(name, ""), spec.to_dict()

    def _action_dim(self) -> int:
        fi, demo = self._index[0]
        return int(self._files[fi]["data"][demo]["actions"].shape[1])

    @property
    def attributes(self) -> dict[str, Any]:
        return {**super().attributes, "env_args": self.env_args,
                "robosuite_version": self.env_args.get("env_version"), "renames": dict(ROBOMIMIC_TO_STORE)}
