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
and stored as `<camera>_image`.

Env specs: each file's suite and task are recognised (`data.attrs["bddl_file_name"]`, else the file
name, checked against `problem_info`'s instruction; envs/libero_tasks.py lists the benchmark's tasks),
and the task gets the spec of the live LIBERO env (simulator: libero) that delivers the store's keys
in the store's orientation, so `eval_rollouts.py` evaluates a policy trained on the store in the
official simulator. A file that cannot be placed, or whose frames are not upright, or whose keys are
renamed, converts as before with one warning saying why its task has no env spec.
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


def place_libero_file(path: str, f: Any, instruction: str) -> tuple[tuple[str, str] | None, str]:
    """((suite, task name), "") of a LIBERO dataset file, from data.attrs["bddl_file_name"]
    (".../bddl_files/<suite>/<task>.bddl") or else its file name, checked against its instruction;
    (None, why) when it cannot be placed among the benchmark's tasks."""
    from envs.libero_tasks import SUITES, find_task, suite_tasks

    bddl = text_attr(f["data"].attrs, "bddl_file_name")
    placed = None
    if bddl:
        suite, task = os.path.basename(os.path.dirname(bddl)), os.path.splitext(os.path.basename(bddl))[0]
        if suite in SUITES and any(t["name"] == task for t in suite_tasks(suite)):
            placed = (suite, task)
    if placed is None:
        name = task_name(path)
        suite = find_task(name)
        if suite is None:
            where = f"bddl_file_name {bddl!r} nor file name" if bddl else "file name (no bddl_file_name attribute)"
            return None, f"neither {where} names a task of {', '.join(SUITES)}"
        placed = (suite, name)
    expected = next(t["instruction"] for t in suite_tasks(placed[0]) if t["name"] == placed[1])
    if " ".join(expected.split()) != instruction:
        return None, (f"it names {placed[0]}/{placed[1]}, whose instruction is {expected!r}, but its problem_info "
                      f"says {instruction!r}")
    return placed, ""


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
        self.action_space: dict[str, Any] = {}
        self.warnings: list[str] = []
        self._tasks = []
        for fi, (n, info) in enumerate(zip(names, self.problem_info)):
            instruction = " ".join(info["language_instruction"].split())
            spec, why = self._env_spec(fi, instruction)
            if why:
                self.warnings.append(f"{os.path.basename(self.paths[fi])}: no env spec ({why}); its task cannot be "
                                     "evaluated in the simulator")
            self._tasks.append(SourceTask(n, instruction, spec))

    def camera_name(self, key: str) -> str:
        return key.removesuffix("_rgb")

    def _env_spec(self, file_index: int, instruction: str) -> tuple[dict[str, Any] | None, str]:
        """(the live LIBERO env's spec for this file's task, "") or (None, why not)."""
        from envs.libero_tasks import CAMERAS, DATASET_STATE_KEYS
        from envs.registry import libero_spec

        placed, why = place_libero_file(self.paths[file_index], self._files[file_index], instruction)
        if placed is None:
            return None, why
        if self.obs_map:
            return None, "obs_map renames keys that the live env delivers under the datasets' names"
        if self.flips[file_index] == "rot180":
            return None, "flip=rot180: the live env delivers frames flipped vertically (flip=vertical)"
        upright_source = text_attr(self._files[file_index]["data"].attrs, "macros_image_convention") == "opencv"
        if self.flips[file_index] == "none" and not upright_source:
            return None, "flip=none keeps OpenGL frames upside down; the live env delivers them upright"
        cameras = [src for src, (_, camera) in self._plan.items() if camera]
        unknown = [c for c in cameras if self.camera_name(c) not in CAMERAS]
        if unknown:
            return None, f"cameras {unknown} are not LIBERO's agentview/eye_in_hand"
        lowdim = [dst for dst, camera in self._plan.values() if not camera]
        state_keys = [k for k in lowdim if k in DATASET_STATE_KEYS]
        size = self.image_size
        if size is None and cameras:
            size = int(self._files[file_index]["data"][self._index[0][1]]["obs"][cameras[0]].shape[1])
        suite, task = placed
        spec = libero_spec(suite, task, images=False,
                           cameras=[self.camera_name(c) for c in cameras], state_keys=state_keys,
                           **({"image_size": size} if size else {}))
        return spec.to_dict(), ""

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
