"""Files of simulator states and actions without observations -> episodes, by replaying the states.

Two layouts hold no observations: robosuite's own demonstrations (`data/demo_*/{states, actions}`, a
`model_file` XML per demo, `data.attrs` `env`, `env_info`, `repository_version`) and robomimic's raw
files before observations are extracted (the same plus `data.attrs["env_args"]`). Each recorded state
is put into our simulator (in the demo's own model when it carries one, asset paths pointed at the
robosuite installed here; in our own model when those models name assets this robosuite lacks, as
robosuite 1.4's do, which a warning line says) and that state's observation and camera frames are read, as robomimic's
`dataset_states_to_obs` does. Each episode's actions are then also replayed open-loop from its first
state, and whether they still reach success here is reported (`replay` in the episode metadata).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from data.convert.common import check_positive, check_renames, resize_frames
from data.convert.hdf5 import demo_names, open_hdf5, read, text_attr
from data.convert.robomimic import base_spec, load_env_args
from data.convert.source import ConvertError, SourceEpisode, SourceTask

ASSETS_MARKER = "/robosuite/models/assets/"
ASSET_ATTR = r'\b(file|filename)="([^"]*)"'


def localize_model_xml(xml: str) -> str:
    """Point a model file's asset paths (recorded on another machine) at this robosuite's assets."""
    import robosuite

    assets = os.path.join(os.path.dirname(robosuite.__file__), "models", "assets")

    def fix(m: re.Match) -> str:
        path = m.group(2).replace("\\", "/")
        if ASSETS_MARKER in path:
            path = os.path.join(assets, path.split(ASSETS_MARKER, 1)[1])
        return f'{m.group(1)}="{path}"'

    return re.sub(ASSET_ATTR, fix, xml)


def missing_assets(xml: str) -> list[str]:
    """The absolute asset paths a (localized) model file names that do not exist here, e.g. a mesh of an
    older robosuite (1.4's mounts/meshes/rethink_mount/pedestal.stl is gone from 1.5)."""
    return sorted({m.group(2) for m in re.finditer(ASSET_ATTR, xml)
                   if os.path.isabs(m.group(2)) and not os.path.exists(m.group(2))})


def env_description(attrs, path: str) -> tuple[str, dict[str, Any], str | None]:
    """(env name, env kwargs, robosuite version that wrote the file) from either layout."""
    if "env_args" in attrs:
        args = load_env_args(attrs, path)
        return args["env_name"], dict(args.get("env_kwargs") or {}), args.get("env_version")
    name = text_attr(attrs, "env")
    if name is None:
        raise ConvertError(f"{path}: data.attrs has neither 'env' (robosuite demos) nor 'env_args' (robomimic); "
                           "cannot tell which env recorded the states")
    info = text_attr(attrs, "env_info")
    try:
        kwargs = json.loads(info) if info else {}
    except json.JSONDecodeError as err:
        raise ConvertError(f"{path}: data.attrs['env_info'] is not valid JSON ({err})") from None
    return name, dict(kwargs), text_attr(attrs, "repository_version")


class RobosuiteRawReader:
    format = "robosuite"

    def __init__(self, path: str, obs_keys: Sequence[str] | None = None, cameras: Sequence[str] | None = None,
                 obs_map: dict[str, str] | None = None, image_size: int | None = None,
                 max_episodes: int | None = None, filter: str | None = None, model_file: bool = True) -> None:
        check_positive("image_size", image_size)
        check_positive("max_episodes", max_episodes)
        self.path, self.filter, self.use_model_file = os.fspath(path), filter, model_file
        self._file = open_hdf5(self.path)
        self.env = None
        try:
            self._setup(obs_keys, list(cameras or []), dict(obs_map or {}), image_size or 84, max_episodes)
        except BaseException:
            self.close()
            raise

    def _setup(self, obs_keys, cameras, obs_map, image_size, max_episodes) -> None:
        from envs.robosuite_env import DEFAULT_STATE_KEYS, INSTRUCTIONS

        self.demos = demo_names(self._file, self.path, self.filter)[:max_episodes]
        attrs = self._file["data"].attrs
        name, kwargs, self.robosuite_version = env_description(attrs, self.path)
        spec, why = base_spec(name, kwargs, cameras, image_size)
        if spec is None:
            raise ConvertError(f"{self.path}: data.attrs names {why}; a file without observations is converted by "
                               "replaying its states, which needs that simulator")
        spec = spec.replace(state_keys=list(obs_keys) if obs_keys is not None else list(DEFAULT_STATE_KEYS))
        self._check_demos()
        from envs.factory import make_env

        longest = max(self._file["data"][d]["actions"].shape[0] for d in self.demos)
        try:  # validates the state keys and cameras against our model
            self.env = make_env(spec.replace(horizon=max(spec.horizon, longest + 1)))
        except ValueError as err:
            raise ConvertError(f"{self.path}: {err} (options obs_keys= / cameras=)") from None
        self.obs_map = obs_map
        self.keys = {k: obs_map.get(k, k) for k in [*spec.state_keys, *(f"{c}_image" for c in spec.cameras)]}
        check_renames(self.keys, self.path)
        self.image_size = image_size
        from envs.registry import ROBOSUITE_NAMES

        short = {v: k for k, v in ROBOSUITE_NAMES.items()}[name]  # "Lift" -> "lift", as task=lift names it
        self._tasks = [SourceTask(short, INSTRUCTIONS.get(name, ""), spec.to_dict())]
        dim = self._file["data"][self.demos[0]]["actions"].shape[1]
        self.action_space = {"low": [-1.0] * dim, "high": [1.0] * dim, "controller": spec.controller}
        self.warnings: list[str] = []
        self._loaded_xml: str | None = None
        self.model_file_fallback: str | None = None
        if self.use_model_file:
            self._fall_back_when_assets_are_missing(name)

    def _fall_back_when_assets_are_missing(self, env_name: str) -> None:
        """Demos recorded by another robosuite name assets this one may lack; then no demo's model can load
        here, and the states are replayed in our own model instead (model_file=false), said in one line."""
        missing: set[str] = set()
        for d in self.demos:
            attrs = self._file["data"][d].attrs
            if "model_file" in attrs:
                missing.update(missing_assets(localize_model_xml(text_attr(attrs, "model_file") or "")))
        if not missing:
            return
        example = sorted(missing)[0]
        example = example.split(ASSETS_MARKER, 1)[-1]
        self.use_model_file = False
        self.model_file_fallback = (f"the demos' model files name {len(missing)} asset(s) robosuite "
                                    f"{_robosuite_version()} lacks (e.g. {example})")
        self.warnings.append(f"{self.path}: {self.model_file_fallback} (recorded with robosuite "
                             f"{self.robosuite_version or '?'}); replaying the states in this robosuite's own "
                             f"{env_name} model instead, as model_file=false does")

    def _check_demos(self) -> None:
        for d in self.demos:
            g, where = self._file["data"][d], f"{self.path}:data/{d}"
            for key in ("states", "actions"):
                if key not in g:
                    raise ConvertError(f"{where} has no {key!r}; replay needs states and actions")
            n_states, n_actions = g["states"].shape[0], g["actions"].shape[0]
            if n_actions == 0 or n_states not in (n_actions, n_actions + 1):
                raise ConvertError(f"{where}/states has {n_states} steps but {where}/actions has {n_actions}; "
                                   "the file is inconsistent")

    @property
    def tasks(self) -> list[SourceTask]:
        return list(self._tasks)

    @property
    def attributes(self) -> dict[str, Any]:
        return {"files": [{"path": os.path.abspath(self.path), "bytes": os.path.getsize(self.path)}],
                "filter": self.filter, "robosuite_version": self.robosuite_version,
                "replayed_in_robosuite": _robosuite_version(), "model_file": self.use_model_file,
                "model_file_fallback": self.model_file_fallback,
                "keys": self.keys, "episodes": list(self.demos)}

    def __len__(self) -> int:
        return len(self.demos)

    def _model_xml(self, group) -> str | None:
        if not self.use_model_file or "model_file" not in group.attrs:
            return None
        xml = localize_model_xml(text_attr(group.attrs, "model_file") or "")
        if xml == self._loaded_xml:
            return None  # already loaded: reloading a model costs a second
        self._loaded_xml = xml
        return xml

    def _read(self, d: str) -> SourceEpisode:
        from data.convert.verify import replay

        g, where = self._file["data"][d], f"{self.path}:data/{d}"
        actions = read(g, "actions", where).astype(np.float32)
        states = read(g, "states", where).astype(np.float64)[: len(actions)]  # a final state has no action
        xml = self._model_xml(g)
        try:
            frames = [self.env.reset_to_state(states[0], xml)]
            ok = bool(self.env.unwrapped_robosuite._check_success())
            for s in states[1:]:
                frames.append(self.env.observe_state(s))
                ok = ok or bool(self.env.unwrapped_robosuite._check_success())
            result = replay(self.env, states, actions)
        except ValueError as err:
            raise ConvertError(f"{where}: {err}") from None
        except Exception as err:  # a model file this robosuite/mujoco cannot load
            raise ConvertError(f"{where}: replaying it failed ({type(err).__name__}: {err}); for a file from another "
                               "robosuite version try model_file=false (our own model)") from None
        arrays = {"action": actions}
        for k, dst in self.keys.items():
            value = np.stack([f[k] for f in frames])
            arrays[dst] = resize_frames(value, self.image_size) if value.dtype == np.uint8 else value
        # The source has no success flag: the demo succeeded if a recorded state, or the state its last
        # action leads to (recorded files stop before it), passes the task's success check here.
        return SourceEpisode(arrays=arrays, task=0, success=ok or result["success"], source=where, states=states,
                             metadata={"replay": result})

    def episodes(self, skip: int = 0) -> Iterator[SourceEpisode]:
        for d in self.demos[skip:]:
            yield self._read(d)

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None
        self._file.close()


def _robosuite_version() -> str:
    import robosuite

    return str(getattr(robosuite, "__version__", "?"))
