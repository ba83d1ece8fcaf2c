"""Scripted experts that generate demonstrations: `make_expert(spec)` picks the one for a task.

Interface: `expert.reset(env)` at the start of an episode (after env.reset), then
`action = expert.act(env, obs)` every step.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from envs.spec import EnvSpec

# task -> (module, class); imported on use so that one simulator's experts never import another's.
ROBOSUITE_EXPERTS = {
    "Lift": ("envs.experts.robosuite_pick_place", "LiftExpert"),
    "Stack": ("envs.experts.robosuite_pick_place", "StackExpert"),
    "PickPlaceCan": ("envs.experts.robosuite_pick_place", "CanExpert"),
    "Door": ("envs.experts.robosuite_door", "DoorExpert"),
    "NutAssemblySquare": ("envs.experts.robosuite_nut", "SquareNutExpert"),
}


def make_expert(spec: EnvSpec | dict[str, Any], noise: float = 0.0):
    """The scripted expert for the spec's task; `noise` > 0 perturbs its actions for diverse demos."""
    if isinstance(spec, dict):
        spec = EnvSpec.from_dict(spec)
    if noise < 0:
        raise ValueError(f"expert noise must be >= 0, got {noise}")
    if spec.simulator == "robosuite":
        if spec.controller != "OSC_POSE":
            raise ValueError(f"the robosuite experts act in OSC_POSE; this spec uses {spec.controller!r}")
        if spec.task not in ROBOSUITE_EXPERTS:
            raise ValueError(
                f"no scripted expert for robosuite task {spec.task!r}; known: {sorted(ROBOSUITE_EXPERTS)}"
            )
        module, name = ROBOSUITE_EXPERTS[spec.task]
        return getattr(importlib.import_module(module), name)(noise=noise)
    if spec.simulator == "metaworld":
        from envs.experts.metaworld_expert import MetaWorldExpert

        expert = MetaWorldExpert(spec)
        return _ActionNoise(expert, noise) if noise > 0 else expert
    if spec.simulator == "libero":
        # One pick-and-place expert for every (In obj region) / (On obj target) goal; it reads the goal from
        # the env at reset and refuses other goals there.
        from envs.experts.libero_pick_place import LiberoPickPlaceExpert

        return LiberoPickPlaceExpert(noise=noise)
    raise ValueError(f"no scripted experts for simulator {spec.simulator!r}; known: robosuite, metaworld, libero")


class _ActionNoise:
    """Adds seeded Gaussian noise to another expert's actions (for experts without their own)."""

    def __init__(self, expert, noise: float) -> None:
        if noise < 0:
            raise ValueError(f"expert noise must be >= 0, got {noise}")
        self.expert, self.noise = expert, noise
        self.rng = np.random.default_rng(0)

    def reset(self, env) -> None:
        seed = getattr(env, "episode_seed", None)
        self.rng = np.random.default_rng([0 if seed is None else seed, 7])
        self.expert.reset(env)

    def act(self, env, obs: dict) -> np.ndarray:
        action = np.asarray(self.expert.act(env, obs), dtype=np.float32)
        noisy = action + self.rng.normal(0.0, self.noise, size=action.shape).astype(np.float32)
        return np.clip(noisy, -1.0, 1.0)
