"""Reading robomimic-layout HDF5 files (robomimic, LIBERO): `data/demo_*/{actions, obs/*, states, ...}`.

`DemoHdf5Reader` does the work both formats share: opening files with clear errors, listing demos
(in numeric order, optionally through `mask/<filter>`), choosing and renaming keys, and checking
every demo's keys and lengths *before* anything is written, so a bad file fails at once instead
of after half the store. Subclasses say how keys are renamed, what a camera is called, how frames
are oriented and which task each file holds.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

import h5py
import numpy as np

from data.convert.common import check_positive, check_renames, pick, resize_frames
from data.convert.source import ConvertError, SourceEpisode, SourceTask


def open_hdf5(path: str) -> h5py.File:
    if not os.path.exists(path):
        raise ConvertError(f"{path}: no such file or directory")
    if os.path.isdir(path) or not h5py.is_hdf5(path):
        raise ConvertError(f"{path} is not an HDF5 file (nor a LeRobot dataset directory with meta/info.json); "
                           "pass a robomimic/robosuite/LIBERO .hdf5 file")
    try:
        return h5py.File(path, "r")  # read-only: a user's source is never written
    except OSError as err:
        raise ConvertError(f"{path} could not be opened as HDF5 ({err}); the file is truncated or corrupt: "
                           "copy or download it again") from None


def read(group: h5py.Group, key: str, where: str) -> np.ndarray:
    """One dataset in full, with a message naming the file and key when it cannot be read."""
    if key not in group:
        raise ConvertError(f"{where} has no {key!r}")
    try:
        return np.asarray(group[key][()])
    except (OSError, RuntimeError, ValueError) as err:
        raise ConvertError(f"{where}/{key} could not be read ({err}); the file is truncated or corrupt") from None


def text_attr(attrs: h5py.AttributeManager, key: str) -> str | None:
    if key not in attrs:
        return None
    value = attrs[key]
    return value.decode() if isinstance(value, bytes) else str(value)


def json_attr(attrs: h5py.AttributeManager, key: str, path: str, missing: str, needs: str) -> dict:
    """data.attrs[key] parsed as a JSON object holding the string field `needs`; `missing` says what the
    absence of the attribute means for this format."""
    text = text_attr(attrs, key)
    if text is None:
        raise ConvertError(f"{path}: data.attrs['{key}'] is missing; {missing}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConvertError(f"{path}: data.attrs['{key}'] is not valid JSON ({err})") from None
    if not isinstance(value, dict) or not isinstance(value.get(needs), str):
        raise ConvertError(f"{path}: data.attrs['{key}'] has no {needs}")
    return value


def demo_names(f: h5py.File, path: str, filter: str | None = None) -> list[str]:
    """The demos of a file in numeric order (demo_2 before demo_10), restricted to mask/<filter>."""
    if not isinstance(f.get("data"), h5py.Group):
        raise ConvertError(f"{path} has no data/ group: not a robomimic, robosuite or LIBERO demonstration file")
    names = sorted((n for n in f["data"] if isinstance(f["data"][n], h5py.Group)),
                   key=lambda n: (int(m.group()) if (m := re.search(r"\d+$", n)) else -1, n))
    if not names:
        raise ConvertError(f"{path}: data/ holds no demo groups (data/demo_0, ...)")
    if filter is None:
        return names
    masks = sorted(f["mask"]) if isinstance(f.get("mask"), h5py.Group) else []
    if filter not in masks:
        raise ConvertError(f"{path} has no mask/{filter}; masks there: {masks or 'none'}")
    wanted = {n.decode() if isinstance(n, bytes) else str(n) for n in read(f["mask"], filter, f"{path}:mask")}
    unknown = sorted(wanted - set(names))
    if unknown:
        raise ConvertError(f"{path}: mask/{filter} names demos not in data/: {unknown[:5]}")
    return [n for n in names if n in wanted]


def is_camera(ds: h5py.Dataset) -> bool:
    return ds.dtype == np.uint8 and ds.ndim == 4 and ds.shape[-1] == 3


class DemoHdf5Reader:
    """Episodes of one or more robomimic-layout files. Subclasses set `format` and the hooks below."""

    format = "hdf5"
    LOWDIM_RENAMES: dict[str, str] = {}  # the format's own source -> store key renames

    def __init__(self, paths: Sequence[str], obs_keys: Sequence[str] | None = None,
                 cameras: Sequence[str] | None = None, obs_map: dict[str, str] | None = None,
                 image_size: int | None = None, max_episodes: int | None = None, filter: str | None = None) -> None:
        check_positive("image_size", image_size)
        check_positive("max_episodes", max_episodes)
        self.paths = [os.fspath(p) for p in paths]
        self.image_size = image_size
        self.obs_map = dict(obs_map or {})
        self.filter = filter
        self._files: list[h5py.File] = []
        self._tasks: list[SourceTask] = []
        try:
            self._files = [open_hdf5(p) for p in self.paths]
            self._index = [(i, n) for i, f in enumerate(self._files) for n in demo_names(f, self.paths[i], filter)]
            if max_episodes is not None:
                self._index = self._index[:max_episodes]
            self._plan = self._plan_keys(obs_keys, cameras)
            self._check_demos()
        except BaseException:
            self.close()
            raise

    # --- hooks ------------------------------------------------------------------------------
    def camera_name(self, key: str) -> str:
        """The camera an image key shows ("agentview_image" -> "agentview")."""
        return key.removesuffix("_image")

    def store_key(self, key: str, camera: bool) -> str:
        if key in self.obs_map:
            return self.obs_map[key]
        return f"{self.camera_name(key)}_image" if camera else self.LOWDIM_RENAMES.get(key, key)

    def orient(self, frames: np.ndarray, file_index: int) -> np.ndarray:
        """Frames as stored -> upright (robomimic stores them upright already)."""
        return frames

    def task_of(self, file_index: int) -> int:
        return 0

    # --- planning and checking -----------------------------------------------------------
    def _where(self, file_index: int, demo: str) -> str:
        return f"{self.paths[file_index]}:data/{demo}"

    def _plan_keys(self, obs_keys, cameras) -> dict[str, tuple[str, bool]]:
        """{source obs key: (store key, is camera)} from the first demo, after the options."""
        fi, demo = self._index[0] if self._index else (0, None)
        if demo is None:
            raise ConvertError(f"{self.paths[0]}: no demos to convert (mask/{self.filter} is empty?)")
        group = self._files[fi]["data"][demo]
        where = self._where(fi, demo)
        obs = group.get("obs")
        if not isinstance(obs, h5py.Group):
            raise ConvertError(f"{where} has no obs/ group; a file of states and actions only is converted by "
                               "replay (format=robosuite)")
        cams = {self.camera_name(k): k for k in obs if is_camera(obs[k])}
        lowdim = [k for k in obs if not is_camera(obs[k])]
        plan = {cams[c]: (self.store_key(cams[c], True), True) for c in pick(cams, cameras, "camera", f"{where}/obs")}
        if obs_keys is not None:
            by_store_name = {self.store_key(k, False): k for k in lowdim}
            known = lowdim + [n for n in by_store_name if n not in lowdim]
            lowdim = [by_store_name.get(k, k) for k in pick(known, obs_keys, "observation key", f"{where}/obs")]
        plan.update({k: (self.store_key(k, False), False) for k in lowdim})
        check_renames({k: v[0] for k, v in plan.items()}, f"{where}/obs")
        clash = [v[0] for v in plan.values() if v[0] in ("action", "states", "reward", "done")]
        if clash:
            raise ConvertError(f"{where}/obs: key(s) {clash} would overwrite the store's own arrays; rename them "
                               "with obs_map")
        return plan

    def _check_demos(self) -> None:
        """Every demo has the planned keys, one length across them, and the first demo's shapes."""
        shapes: dict[str, tuple] = {}
        for fi, demo in self._index:
            group, where = self._files[fi]["data"][demo], self._where(fi, demo)
            if "actions" not in group:
                raise ConvertError(f"{where} has no 'actions'")
            keys = {"actions": "actions", **{f"obs/{k}": f"obs/{k}" for k in self._plan}}
            keys.update({k: k for k in ("states", "rewards", "dones") if k in group})
            n = group["actions"].shape[0]
            for key in keys:
                if key not in group:
                    raise ConvertError(f"{where} has no {key!r} (the first demo has it); convert a consistent file "
                                       "or choose keys with obs_keys/cameras")
                ds = group[key]
                if ds.shape[0] != n:
                    raise ConvertError(f"{where}/{key} has {ds.shape[0]} steps but {where}/actions has {n}; "
                                       "the file is inconsistent")
                shape = ds.shape[1:]
                if key.startswith("obs/") and self._plan[key[4:]][1] and self.image_size:
                    shape = (self.image_size, self.image_size, 3)
                if shapes.setdefault(key, shape) != shape:
                    raise ConvertError(f"{where}/{key} has per-step shape {shape}, other demos {shapes[key]}; "
                                       "one store needs one shape per key")
            if n == 0:
                raise ConvertError(f"{where} has no steps")

    # --- the DatasetReader interface ------------------------------------------------------
    def __len__(self) -> int:
        return len(self._index)

    @property
    def keys(self) -> dict[str, str]:
        """{source obs key: store key} of what is converted."""
        return {k: v[0] for k, v in self._plan.items()}

    def episode_ids(self) -> list[str]:
        many = len(self.paths) > 1
        return [f"{os.path.basename(self.paths[fi])}:{d}" if many else d for fi, d in self._index]

    def _read(self, fi: int, demo: str) -> SourceEpisode:
        group, where = self._files[fi]["data"][demo], self._where(fi, demo)
        arrays = {"action": read(group, "actions", where).astype(np.float32)}
        for src, (dst, camera) in self._plan.items():
            value = read(group, f"obs/{src}", where)
            arrays[dst] = resize_frames(np.ascontiguousarray(self.orient(value, fi)), self.image_size) if camera \
                else value.astype(np.float32)
        rewards = read(group, "rewards", where).astype(np.float32) if "rewards" in group else None
        if rewards is not None:
            arrays["reward"] = rewards
        if "dones" in group:
            arrays["done"] = read(group, "dones", where).astype(np.float32)
        states = read(group, "states", where) if "states" in group else None
        # Sparse robosuite rewards are 1 on success; files without rewards hold successful demos only.
        success = True if rewards is None else bool(rewards.max() > 0)
        return SourceEpisode(arrays=arrays, task=self.task_of(fi), success=success, source=where, states=states)

    def episodes(self, skip: int = 0) -> Iterator[SourceEpisode]:
        for fi, demo in self._index[skip:]:
            yield self._read(fi, demo)

    @property
    def tasks(self) -> list[SourceTask]:
        return list(self._tasks)  # set by each format's constructor

    @property
    def attributes(self) -> dict[str, Any]:
        return {"files": [{"path": os.path.abspath(p), "bytes": os.path.getsize(p)} for p in self.paths],
                "filter": self.filter, "keys": self.keys, "episodes": self.episode_ids()}

    def close(self) -> None:
        for f in self._files:
            f.close()
        self._files = []

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
