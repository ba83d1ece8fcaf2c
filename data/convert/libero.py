"""LIBERO HDF5 suites -> episodes: one task per source file, with its language instruction.

A LIBERO file is robomimic-like: `data/demo_*/{actions, obs/{agentview_rgb, eye_in_hand_rgb, ee_pos,
ee_ori, ee_states, gripper_states, joint_states}, states, rewards, dones}` and `data.attrs["problem_info"]`
(JSON with `language_instruction`). SRC is one file, several files, or a folder of them (a suite);
all of them go into one store, so they need the same keys and shapes.

Frames: LIBERO renders with OpenGL's bottom-row-first convention and stores frames as rendered,
i.e. upside down; they are flipped upright here (`flip=vertical`, the default; `flip=rot180` rotates
instead, as some LIBERO pipelines do; `flip=none` keeps them). A file whose
`macros_image_convention` attribute says "opencv" is already upright and is not flipped. The store's
attributes record what was done. Cameras are named by dropping `_rgb` (`agentview`, `eye_in_hand`)
and stored as `<camera>_image`. No LIBERO simulator exists here, so tasks have no env spec.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from data.convert.hdf5 import DemoHdf5Reader, json_attr, text_attr
from data.convert.source import ConvertError, SourceTask

FLIPS = ("vertical", "rot180", "none")


def libero_files(paths: Sequence[str]) -> list[str]:
    """SRC paths -> the HDF5 files they name (a folder stands for its *.hdf5 files, sorted)."""
    files: list[str] = []
    for p in map(os.fspath, paths):
        if os.path.isdir(p):
            found = sorted(os.path.join(p, n) for n in os.listdir(p) if n.endswith((".hdf5", ".h5")))
            if not found:
                raise ConvertError(f"{p}: folder holds no .hdf5 files (nor meta/info.json of a LeRobot dataset)")
            files += found
        else:
            files.append(p)
    if len(set(files)) != len(files):
        raise ConvertError(f"a file is named twice in {list(paths)}")
    return files


def task_name(path: str) -> str:
    """KITCHEN_SCENE3_turn_on_the_stove_demo.hdf5 -> KITCHEN_SCENE3_turn_on_the_stove."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return stem.removesuffix("_demo")


class LiberoReader(DemoHdf5Reader):
    format = "libero"

    def __init__(self, paths: str | Sequence[str], flip: str = "vertical", **options: Any) -> None:
        if flip not in FLIPS:
            raise ConvertError(f"flip must be one of {', '.join(FLIPS)}, got {flip!r}")
        self.flip = flip
        files = libero_files([paths] if isinstance(paths, str | os.PathLike) else list(paths))
        super().__init__(files, **options)
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        self.problem_info, self.flips = [], []
        for path, f in zip(self.paths, self._files):
            info = json_attr(f["data"].attrs, "problem_info", path, "LIBERO files hold the task's "
                             "language_instruction there (a robomimic file converts with format=robomimic)",
                             needs="language_instruction")
            self.problem_info.append(info)
            convention = text_attr(f["data"].attrs, "macros_image_convention")
            self.flips.append("none" if convention == "opencv" else self.flip)
        names = [task_name(p) for p in self.paths]
        if len(set(names)) != len(names):
            raise ConvertError(f"two files hold the same task name {names}; convert them into separate stores")
        self._tasks = [SourceTask(n, " ".join(i["language_instruction"].split()), None)
                       for n, i in zip(names, self.problem_info)]
        self.action_space: dict[str, Any] = {}
        self.warnings: list[str] = []

    def camera_name(self, key: str) -> str:
        return key.removesuffix("_rgb")

    def task_of(self, file_index: int) -> int:
        return file_index

    def orient(self, frames: np.ndarray, file_index: int) -> np.ndarray:
        flip = self.flips[file_index]
        if flip == "vertical":
            return frames[:, ::-1]
        if flip == "rot180":
            return frames[:, ::-1, ::-1]
        return frames

    @property
    def attributes(self) -> dict[str, Any]:
        return {**super().attributes, "problem_info": self.problem_info,
                "frames_flipped": dict(zip((os.path.basename(p) for p in self.paths), self.flips))}
