"""Meta-World v3 tasks: their language instructions, the MT10/MT50 sets, and spec construction.

The instructions are plain-language descriptions of each task's goal (written for this
framework); a language-conditioned policy reads them as its goal. MT10 and MT50 are read
from the installed metaworld package on first access, since importing it imports mujoco,
which must only happen after the rendering backend is chosen (envs/render.py).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from envs.spec import EnvSpec

METAWORLD_INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "pick up the nut and fit it onto the peg",
    "basketball-v3": "pick up the basketball and dunk it into the hoop",
    "bin-picking-v3": "pick up the cube from one bin and place it into the other bin",
    "box-close-v3": "pick up the lid and put it on the box to close it",
    "button-press-topdown-v3": "press the button down from the top",
    "button-press-topdown-wall-v3": "reach past the wall and press the button down from the top",
    "button-press-v3": "push the button in from the front",
    "button-press-wall-v3": "reach past the wall and push the button in from the front",
    "coffee-button-v3": "press the button on the coffee machine",
    "coffee-pull-v3": "pull the mug out from under the coffee machine to the goal",
    "coffee-push-v3": "push the mug under the coffee machine",
    "dial-turn-v3": "turn the dial half a revolution",
    "disassemble-v3": "pick the nut up and pull it off the peg",
    "door-close-v3": "push the door closed",
    "door-lock-v3": "turn the door's lock down to lock it",
    "door-open-v3": "pull the door open by its handle",
    "door-unlock-v3": "turn the door's lock to unlock it",
    "hand-insert-v3": "put the gripper into the hole in the table",
    "drawer-close-v3": "push the drawer closed",
    "drawer-open-v3": "pull the drawer open",
    "faucet-open-v3": "turn the faucet handle to open the faucet",
    "faucet-close-v3": "turn the faucet handle to close the faucet",
    "hammer-v3": "pick up the hammer and hammer the nail into the wall",
    "handle-press-side-v3": "press the handle down from the side",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up from the side",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever up",
    "peg-insert-side-v3": "pick up the peg and insert it sideways into the hole",
    "pick-place-wall-v3": "pick up the puck, carry it over the wall and place it at the goal",
    "pick-out-of-hole-v3": "pick the peg up out of the hole",
    "reach-v3": "move the gripper to the goal position",
    "push-back-v3": "pull the puck back towards the robot to the goal",
    "push-v3": "push the puck to the goal",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "plate-slide-v3": "slide the plate forward into the cabinet",
    "plate-slide-side-v3": "slide the plate sideways into the cabinet",
    "plate-slide-back-v3": "slide the plate back out of the cabinet",
    "plate-slide-back-side-v3": "slide the plate sideways out of the cabinet",
    "peg-unplug-side-v3": "pull the peg out of the wall sideways",
    "soccer-v3": "push the soccer ball into the goal",
    "stick-push-v3": "pick up the stick and use it to push the bottle to the goal",
    "stick-pull-v3": "pick up the stick and use it to pull the bottle to the goal",
    "push-wall-v3": "push the puck around the wall to the goal",
    "reach-wall-v3": "reach past the wall to the goal position",
    "shelf-place-v3": "pick up the puck and place it on the shelf",
    "sweep-into-v3": "sweep the puck into the hole",
    "sweep-v3": "sweep the puck off the edge of the table",
    "window-open-v3": "slide the window open",
    "window-close-v3": "slide the window closed",
}

# Meta-World's own episode limit (SawyerXYZEnv.max_path_length, the same for every v3 task).
DEFAULT_HORIZON = 500
STATE_KEY = "state"  # the 39-d vector: hand, gripper, objects, the previous frame of those, goal


def import_metaworld() -> ModuleType:
    """Choose the GL backend, then import metaworld.env_dict (which imports mujoco)."""
    from envs.render import setup_rendering

    setup_rendering()
    import metaworld.env_dict as env_dict

    return env_dict


def __getattr__(name: str) -> Any:
    # MT10 / MT50 are resolved lazily so that importing this module does not import mujoco.
    if name == "MT10":
        return list(import_metaworld().MT10_V3)
    if name == "MT50":
        return list(import_metaworld().MT50_V3)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_task(task: str) -> None:
    if task not in METAWORLD_INSTRUCTIONS:
        raise ValueError(
            f"unknown Meta-World task {task!r}; known tasks: {', '.join(sorted(METAWORLD_INSTRUCTIONS))}"
        )


def metaworld_spec(
    task: str,
    images: bool,
    camera: str = "corner2",
    image_size: int = 84,
    horizon: int | None = None,
    render: str = "fast",
    seed: int = 0,
) -> EnvSpec:
    """The spec of one Meta-World v3 task: the 39-d state, plus one camera when `images`."""
    check_task(task)
    return EnvSpec(
        simulator="metaworld",
        task=task,
        robot="Sawyer",
        controller="mocap_xyz",  # action = [dx, dy, dz, gripper] in [-1, 1]; end effector on a mocap body
        cameras=[camera] if images else [],
        image_size=image_size,
        horizon=DEFAULT_HORIZON if horizon is None else horizon,
        state_keys=[STATE_KEY],
        render=render,
        seed=seed,
    )
