"""make_env(spec): the one way the framework builds a simulator, from an EnvSpec or its dict form."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from envs.mujoco_log import route_mujoco_warnings
from envs.render import setup_rendering
from envs.spec import EnvSpec


def as_spec(spec: EnvSpec | dict[str, Any]) -> EnvSpec:
    """An EnvSpec from either form (the dict form is what stores and checkpoints hold)."""
    if isinstance(spec, EnvSpec):
        return spec
    if isinstance(spec, dict):
        return EnvSpec.from_dict(spec)
    raise TypeError(f"env spec must be an EnvSpec or a dict, got {type(spec).__name__}")


def make_env(spec: EnvSpec | dict[str, Any]) -> gym.Env:
    """Build the environment a spec describes (simulators are imported only when needed)."""
    spec = as_spec(spec)
    # Validate sizes here too: a spec mutated after construction skips __post_init__.
    if spec.image_size <= 0:
        raise ValueError(f"image_size must be positive, got {spec.image_size}")
    # The GL backend is read when mujoco is first imported, so choose it before any simulator import.
    setup_rendering()
    route_mujoco_warnings()  # never a MUJOCO_LOG.TXT in the working directory
    if spec.simulator == "robosuite":
        from envs.robosuite_env import RobosuiteEnv

        return RobosuiteEnv(spec)
    if spec.simulator == "metaworld":
        from envs.metaworld_env import make_metaworld_env

        return make_metaworld_env(spec)
    if spec.simulator == "libero":
        from envs.libero_env import LiberoEnv  # the simulator itself runs under .venv-libero's interpreter

        return LiberoEnv(spec)
    raise ValueError(f"unknown simulator {spec.simulator!r}; known: robosuite, metaworld, libero")
