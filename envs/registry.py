"""Task names users type (`task=lift`, `task=mt10`, `task=reach-v3`) -> env specs + instructions.

Robosuite tasks: lift, stack, can, door, square (the robosuite env names work too).
Meta-World: any v3 task name, and the sets mt10 and mt50. LIBERO: a suite (libero_object: all its
tasks), one task of it by id or name (libero_object/3, libero_object/pick_up_the_...), or a task name.
Several names joined by commas make one multi-task list ("lift,can").
"""

from __future__ import annotations

import dataclasses
from typing import Any

from envs.libero_tasks import DEFAULT_STATE_KEYS as LIBERO_STATE_KEYS
from envs.libero_tasks import IMAGE_SIZE as LIBERO_IMAGE_SIZE
from envs.libero_tasks import LIBERO_CAMERAS
from envs.libero_tasks import MAX_STEPS as LIBERO_MAX_STEPS
from envs.libero_tasks import SUITES as LIBERO_SUITES
from envs.metaworld_tasks import METAWORLD_INSTRUCTIONS
from envs.robosuite_env import DEFAULT_STATE_KEYS
from envs.robosuite_env import INSTRUCTIONS as ROBOSUITE_INSTRUCTIONS
from envs.spec import EnvSpec

ROBOSUITE_NAMES = {
    "lift": "Lift",
    "stack": "Stack",
    "can": "PickPlaceCan",
    "door": "Door",
    "square": "NutAssemblySquare",
}
ROBOSUITE_CAMERAS = ["agentview", "robot0_eye_in_hand"]
TASK_SETS = ("mt10", "mt50")
_SPEC_FIELDS = {f.name for f in dataclasses.fields(EnvSpec)} - {"simulator", "task", "version"}


def known_tasks() -> list[str]:
    """Every name resolve_tasks accepts (robosuite short names, sets, Meta-World tasks, LIBERO suites)."""
    return list(ROBOSUITE_NAMES) + list(TASK_SETS) + sorted(METAWORLD_INSTRUCTIONS) + list(LIBERO_SUITES)


def libero_spec(suite: str, task: str | int, images: bool = False, **fields: Any) -> EnvSpec:
    """The spec of a LIBERO task with the reference evaluation's horizon; both cameras at the official
    datasets' 128x128 when `images`. The robot state keys are the official datasets' (envs/libero_tasks.py);
    state-only specs add the objects' poses (object-state)."""
    defaults: dict[str, Any] = {
        "cameras": list(LIBERO_CAMERAS) if images else [],
        "image_size": LIBERO_IMAGE_SIZE,
        "horizon": LIBERO_MAX_STEPS[suite] if suite in LIBERO_MAX_STEPS else 400,
        "state_keys": list(LIBERO_STATE_KEYS) + ([] if images else ["object-state"]),
    }
    return EnvSpec(simulator="libero", suite=suite, task=str(task), **{**defaults, **fields})


def _libero_names(part: str) -> list[tuple[str, str]] | None:
    """(suite, task name) pairs a LIBERO name stands for; None when it is not a LIBERO name."""
    from envs.libero_tasks import find_task, suite_tasks, task_entry

    suite, sep, task = part.partition("/")
    if suite in LIBERO_SUITES:
        if not sep:
            return [(suite, t["name"]) for t in suite_tasks(suite)]
        return [(suite, task_entry(suite, task)["name"])]  # an unknown task lists the suite's tasks
    found = find_task(part)
    return [(found, part)] if found else None


def robosuite_spec(task: str, images: bool = False, **fields: Any) -> EnvSpec:
    """The spec of a robosuite task (robosuite env name), with both default cameras when `images`.

    `fields` set any other EnvSpec field (and may override the cameras or state keys).
    """
    defaults: dict[str, Any] = {
        "cameras": list(ROBOSUITE_CAMERAS) if images else [],
        "state_keys": list(DEFAULT_STATE_KEYS),  # explicit, so a stored spec survives changed defaults
    }
    return EnvSpec(simulator="robosuite", task=task, **{**defaults, **fields})


def _names(name: str) -> list[str]:
    by_robosuite_name = {v.lower(): k for k, v in ROBOSUITE_NAMES.items()}
    names: list[str] = []
    for part in (p.strip() for p in name.split(",")):
        libero = _libero_names(part)
        if libero is not None:
            names += [f"{suite}/{task}" for suite, task in libero]
            continue
        part = part.lower()
        if part in TASK_SETS:
            from envs import metaworld_tasks  # MT10/MT50 come from the installed metaworld

            names += getattr(metaworld_tasks, part.upper())
        elif part in ROBOSUITE_NAMES or part in METAWORLD_INSTRUCTIONS:
            names.append(part)
        elif part in by_robosuite_name:
            names.append(by_robosuite_name[part])
        else:
            raise ValueError(
                f"unknown task {part!r}; known tasks: {', '.join(known_tasks())} "
                "(join several with commas for a multi-task set)"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"task list {name!r} names a task twice")
    return names


def resolve_tasks(name: str, images: bool = False, **overrides: Any) -> list[dict[str, Any]]:
    """[{name, instruction, env_spec}] for a task name, a set (mt10, mt50) or a comma list.

    `overrides` replace EnvSpec fields (image_size, horizon, cameras, render, seed, ...).
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"task must be a non-empty name; known tasks: {', '.join(known_tasks())}")
    unknown = sorted(set(overrides) - _SPEC_FIELDS)
    if unknown:
        raise ValueError(f"unknown env spec overrides {unknown}; known: {sorted(_SPEC_FIELDS)}")
    tasks = []
    for task in _names(name):
        if "/" in task:  # LIBERO: suite/task name
            suite, _, task_name = task.partition("/")
            spec = libero_spec(suite, task_name, images=images)
            if overrides:
                spec = spec.replace(**overrides)
            from envs.libero_tasks import task_entry

            tasks.append({"name": task_name, "instruction": task_entry(suite, task_name)["instruction"],
                          "env_spec": spec})
            continue
        if task in ROBOSUITE_NAMES:
            spec = robosuite_spec(ROBOSUITE_NAMES[task], images=images)
            instruction = ROBOSUITE_INSTRUCTIONS[spec.task]
        else:
            from envs.metaworld_tasks import metaworld_spec

            spec = metaworld_spec(task, images=images)
            instruction = METAWORLD_INSTRUCTIONS[task]
        if overrides:
            spec = spec.replace(**overrides)  # re-validates
        tasks.append({"name": task, "instruction": instruction, "env_spec": spec})
    return tasks
