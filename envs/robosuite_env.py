"""robosuite 1.5.1 tasks behind the framework's gymnasium interface.

Deterministic resets: robosuite 1.5.1 has no working seed argument; object placement and the
robot's initial joint noise draw from the *global* `np.random`. `reset(seed)` therefore runs
robosuite's reset with the global generator swapped for the env's own seeded one and puts the
caller's global state back afterwards, so episodes depend on their seed only (and the caller's
random streams are not disturbed).
"""

from __future__ import annotations

import contextlib
import logging
import random
from typing import Any

import gymnasium as gym
import numpy as np

from envs.render import (
    FAST_SHADOW_SIZE,
    FrameRenderer,
    make_render_context,
    set_scene_quality,
    setup_rendering,
)
from envs.spec import EnvSpec

ROBOSUITE_TASKS = ("Lift", "Stack", "PickPlaceCan", "Door", "NutAssemblySquare")
DEFAULT_STATE_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object-state")
INSTRUCTIONS = {
    "Lift": "pick up the red cube and lift it",
    "Stack": "pick up the red cube and stack it on the green cube",
    "PickPlaceCan": "pick up the can and place it in the bottom right bin",
    "Door": "turn the handle and pull the door open",
    "NutAssemblySquare": "pick up the square nut and put it on the square peg",
}
CONTROL_FREQ = 20
VIDEO_SIZE = 256


def _quiet_robosuite() -> None:
    # robosuite logs INFO/WARNING lines on import and on every env creation; keep errors only.
    logger = logging.getLogger("robosuite_logs")
    if not any(getattr(f, "_mode_il", False) for f in logger.filters):
        keep_errors = logging.Filter()
        keep_errors.filter = lambda record: record.levelno >= logging.ERROR  # type: ignore[method-assign]
        keep_errors._mode_il = True  # type: ignore[attr-defined]
        logger.addFilter(keep_errors)


def _import_robosuite():
    setup_rendering()
    _quiet_robosuite()
    import robosuite

    return robosuite


def _controller_config(robot: str, controller: str) -> dict:
    from robosuite.controllers import (
        PART_CONTROLLER_INFO,
        load_composite_controller_config,
        load_part_controller_config,
    )

    config = load_composite_controller_config(robot=robot)
    arm = config["body_parts"]["right"]
    if arm["type"] != controller:
        if controller not in PART_CONTROLLER_INFO:
            raise ValueError(f"unknown controller {controller!r}; known: {sorted(PART_CONTROLLER_INFO)}")
        gripper = arm.get("gripper")
        arm = load_part_controller_config(default_controller=controller)
        if gripper is not None:
            arm["gripper"] = gripper
        config["body_parts"]["right"] = arm
    return config


@contextlib.contextmanager
def _seeded_global_random(rng: np.random.RandomState):
    """Run a block with the global np.random drawing from `rng` (advanced by what the block draws);
    the caller's global numpy and stdlib random states are restored afterwards."""
    saved, saved_py = np.random.get_state(), random.getstate()
    np.random.set_state(rng.get_state())
    # Some robosuite variants pick objects with the stdlib generator: seed it from ours too.
    random.seed(int(np.random.randint(0, 2**31 - 1)))
    try:
        yield
    finally:
        rng.set_state(np.random.get_state())
        np.random.set_state(saved)
        random.setstate(saved_py)


class RobosuiteEnv(gym.Env):
    """One robosuite task; observations are float32 state keys plus upright `<camera>_image` frames."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_FREQ}
    render_mode = "rgb_array"

    def __init__(self, spec: EnvSpec) -> None:
        if spec.task not in ROBOSUITE_TASKS:
            raise ValueError(f"unknown robosuite task {spec.task!r}; known: {', '.join(ROBOSUITE_TASKS)}")
        self.env_spec = spec
        self.instruction = INSTRUCTIONS[spec.task]
        self.state_keys = list(spec.state_keys) or list(DEFAULT_STATE_KEYS)
        suite = _import_robosuite()
        kwargs: dict[str, Any] = dict(
            robots=spec.robot,
            controller_configs=_controller_config(spec.robot, spec.controller),
            has_renderer=False,
            # An offscreen context also serves render() in state-only envs.
            has_offscreen_renderer=True,
            use_camera_obs=bool(spec.cameras),
            camera_names=list(spec.cameras) or "agentview",
            camera_heights=spec.image_size,
            camera_widths=spec.image_size,
            control_freq=CONTROL_FREQ,
            horizon=spec.horizon,
            ignore_done=True,  # the wrapper truncates; robosuite would raise on a step past its horizon
            hard_reset=False,  # a hard reset rebuilds the whole model (~1 s) on every episode
            reward_shaping=False,
        )
        try:
            # Model construction draws too (Lift's cube size, for one): seed it from the spec.
            with _seeded_global_random(np.random.RandomState(spec.seed)):
                self._env = suite.make(spec.task, **kwargs)
        except ValueError as err:
            if spec.cameras and "sensor for observable" in str(err):
                self._raise_unknown_camera(suite, spec.task, kwargs)
            raise
        self.sim = self._env.sim
        self._rng = np.random.RandomState(spec.seed)
        self.episode_seed: int | None = None
        self._t = 0
        self._video: FrameRenderer | None = None
        # The model's own render settings, before fast mode changes them: "full" restores these.
        q = self.sim.model._model.vis.quality
        self._full_settings = (int(q.shadowsize), int(q.offsamples))
        obs = self._reset_sim()
        self._set_obs_quality(spec.render)
        missing = [k for k in self.state_keys if k not in obs]
        if missing:
            known = sorted(k for k in obs if not k.endswith("_image"))
            raise ValueError(f"unknown state keys {missing} for {spec.task}; known: {known}")
        self.observation_space = gym.spaces.Dict(
            {k: gym.spaces.Box(-np.inf, np.inf, v.shape, np.float32) for k, v in self._convert(obs).items()
             if not k.endswith("_image")}
            | {f"{c}_image": gym.spaces.Box(0, 255, (spec.image_size, spec.image_size, 3), np.uint8)
               for c in spec.cameras}
        )
        low, high = self._env.action_spec
        self.action_space = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)

    @staticmethod
    def _raise_unknown_camera(suite, task: str, kwargs: dict) -> None:
        probe = suite.make(task, **{**kwargs, "use_camera_obs": False, "camera_names": "agentview"})
        known = list(probe.sim.model.camera_names)
        probe.close()
        bad = [c for c in kwargs["camera_names"] if c not in known]
        raise ValueError(f"camera(s) {bad} not in the {task} model; known cameras: {known}") from None

    # -- rendering -------------------------------------------------------------------------
    def _set_obs_quality(self, quality: str) -> None:
        """Re-make robosuite's own render context (used for camera observations) at `quality`."""
        ctx = self.sim._render_context_offscreen
        ctx.gl_ctx.make_current()
        model = self.sim.model._model
        ctx.con.free()
        ctx.con = make_render_context(model, quality, full_settings=self._full_settings)
        set_scene_quality(ctx.scn, quality)
        self._restore_obs_buffer()
        # Leave the model at this quality too: robosuite re-makes its context from the model's
        # settings when asked for frames larger than its buffer.
        if quality == "fast":
            model.vis.quality.shadowsize, model.vis.quality.offsamples = FAST_SHADOW_SIZE, 0

    def _restore_obs_buffer(self) -> None:
        import mujoco

        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self.sim._render_context_offscreen.con)

    def render(
        self, camera: str | None = None, size: int = VIDEO_SIZE, quality: str | None = None
    ) -> np.ndarray:
        """An upright RGB frame (size x size) from `camera` (default: the first obs camera or agentview).

        `quality` defaults to the spec's; "full" (shadows, reflections, MSAA) is for videos and
        does not change the observations, which keep the spec's quality.
        """
        quality = quality or self.env_spec.render
        camera = camera or (self.env_spec.cameras[0] if self.env_spec.cameras else "agentview")
        names = list(self.sim.model.camera_names)
        if camera not in names:
            raise ValueError(
                f"camera {camera!r} not in the {self.env_spec.task} model; known cameras: {names}"
            )
        ctx = self.sim._render_context_offscreen
        ctx.gl_ctx.make_current()
        if self._video is None or self._video.quality != quality or self._video_size < size:
            if self._video is not None:
                self._video.close()
            self._video = FrameRenderer(
                self.sim.model._model, quality, size, size, option=ctx.vopt, full_settings=self._full_settings
            )
            self._video_size = size
        frame = self._video.render(self.sim.data._data, names.index(camera), size, size)
        self._restore_obs_buffer()
        return frame

    # -- gymnasium API -----------------------------------------------------------------------
    def _convert(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        obs = {k: np.atleast_1d(np.asarray(raw[k], dtype=np.float32)) for k in self.state_keys}
        for cam in self.env_spec.cameras:
            # robosuite returns OpenGL frames, bottom row first
            obs[f"{cam}_image"] = np.ascontiguousarray(raw[f"{cam}_image"][::-1])
        return obs

    def _reset_sim(self) -> dict[str, np.ndarray]:
        with _seeded_global_random(self._rng):
            raw = self._env.reset()
        self._t = 0
        return raw

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is None:
            # Unseeded resets continue the env's own stream (seeded by spec.seed or the last seed).
            seed = int(self._rng.randint(0, 2**31 - 1))
        self._rng = np.random.RandomState(seed)
        self.episode_seed = seed
        raw = self._reset_sim()
        return self._convert(raw), {"success": bool(self._env._check_success()), "seed": seed}

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {action.shape}")
        raw, reward, _, _ = self._env.step(np.clip(action, -1.0, 1.0))
        self._t += 1
        success = bool(self._env._check_success())
        # The episode ends on success (robosuite itself never terminates).
        truncated = self._t >= self.env_spec.horizon
        return self._convert(raw), float(reward), success, truncated, {"success": success}

    # -- flat simulator states (dataset conversion, replay checks) -----------------------------
    def get_flat_state(self) -> np.ndarray:
        """The simulator state as robosuite and robomimic datasets store it: [time, qpos, qvel]."""
        return np.asarray(self.sim.get_state().flatten(), dtype=np.float64)

    def observe_state(self, state: np.ndarray) -> dict[str, np.ndarray]:
        """Put the simulator into a flat state (no physics step) and return that state's observation."""
        state = np.asarray(state, dtype=np.float64)
        size = 1 + self.sim.model.nq + self.sim.model.nv
        if state.shape != (size,):
            raise ValueError(f"a flat {self.env_spec.task} state here has 1 + nq + nv = {size} values, got "
                             f"{state.shape}: it was recorded with another robot, gripper or object model")
        self.sim.set_state_from_flattened(state)
        self.sim.forward()
        return self._convert(self._env._get_observations(force_update=True))

    def reset_to_state(self, state: np.ndarray, model_xml: str | None = None) -> dict[str, np.ndarray]:
        """Reset (into `model_xml`, a dataset's per-episode model, when given), then restore `state`.

        Controller and gripper memories are cleared by the reset, as at the start of an episode, so
        replaying an episode's actions from its first state follows the recorded trajectory.
        """
        if model_xml is not None:
            self._make_render_context_current()  # what is freed next lives in it: see the method
            if self._video is not None:  # its GL objects belong to the model being replaced
                self._video.close()
                self._video = None
            with _seeded_global_random(self._rng):
                self._env.reset_from_xml_string(model_xml)
            self.sim = self._env.sim
            self._set_obs_quality(self.env_spec.render)
        self._reset_sim()
        obs = self.observe_state(state)
        # The reset built the controllers around the pose it drew (goal, and the nullspace target of OSC);
        # rebuild those around the restored pose, as they were when the state was recorded.
        for robot in self._env.robots:
            robot.composite_controller.update_state()
            for part in robot.composite_controller.part_controllers.values():
                part.update(force=True)
                part.update_initial_joints(part.joint_pos)
            robot.composite_controller.reset()
        return obs

    def step_physics(self, action) -> bool:
        """One control step whose observation is not converted (open-loop replays); returns the success check.
        Inside `cameras_paused()` it renders nothing."""
        self._env.step(np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0))
        self._t += 1
        return bool(self._env._check_success())

    @contextlib.contextmanager
    def cameras_paused(self):
        """Steps inside the block render no camera frames (robosuite leaves those observations out): for
        `step_physics` replays, where rendering would be most of a camera env's step time."""
        paused = [o for o in self._env._observables.values() if o.modality == "image" and o.is_enabled()]
        for o in paused:
            o.set_enabled(False)
        try:
            yield
        finally:
            for o in paused:
                o.set_enabled(True)

    @property
    def unwrapped_robosuite(self):
        """The robosuite environment (experts read object poses from it)."""
        return self._env

    def close(self) -> None:
        if getattr(self, "_env", None) is not None:
            self._make_render_context_current()
            if getattr(self, "_video", None) is not None:
                self._video.close()
                self._video = None
            self._env.close()
            self._env = None

    def _make_render_context_current(self) -> None:
        """robosuite frees MuJoCo's render context (mjr_freeContext: GL calls) without making its GL context
        current, so the calls land in whichever context is: another env's, whose objects it then deletes
        (a later render or free of that env segfaults). Make ours current before anything frees it."""
        ctx = getattr(getattr(self._env, "sim", None), "_render_context_offscreen", None)
        if ctx is not None:
            ctx.gl_ctx.make_current()
