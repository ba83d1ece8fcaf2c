"""Meta-World 3.1.1 behind the framework's env interface (gymnasium API, dict observations).

Built on the task classes directly rather than on `gym.make("Meta-World/MT1")`: MT1 draws 50
fixed goal configurations up front and picks among them with its own generator, so a seed
would not name one configuration and every env would pay 50 resets at construction. Here
`reset(seed)` reseeds the task's generator and draws the object and goal positions from the
task's full random range, as MT1 does (goal observable, the multi-task setting).

Conventions shared with envs/robosuite_env.py: the episode terminates on success and is
truncated at spec.horizon; an unseeded reset draws its seed from the env's own stream, and
every episode's seed is reported (info["seed"], env.episode_seed) so it can be replayed.
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np

from envs.metaworld_tasks import METAWORLD_INSTRUCTIONS, STATE_KEY, check_task, import_metaworld
from envs.render import FrameRenderer
from envs.spec import EnvSpec

STATE_DIM = 39
VIDEO_SIZE = 256  # default render() size; observations use spec.image_size
DEFAULT_VIDEO_CAMERA = "corner2"


def _rotate_to_upright(model: Any, data: Any, camera_id: int) -> bool:
    """Whether the camera's image must be rotated 180 degrees to come out upright.

    Upright means the image's up is world +z; for a camera looking straight down it means
    world +y (the far side of the table at the top). Meta-World defines its corner cameras
    with their up axis pointing below the horizon, so their images come out upside down.
    """
    axes = data.cam_xmat[camera_id].reshape(3, 3)  # columns: camera x (right), y (up), z (backward)
    up, forward = axes[:, 1], -axes[:, 2]
    if abs(forward[2]) > 0.9:
        return bool(up[1] < 0)
    return bool(up[2] < 0)


class MetaWorldEnv(gym.Env):
    """One Meta-World v3 task; observations are the 39-d float32 state plus upright camera frames."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}  # 5 substeps of 2.5 ms per step
    render_mode = "rgb_array"

    def __init__(self, spec: EnvSpec) -> None:
        _check_spec(spec)
        env_dict = import_metaworld()
        import mujoco  # only after import_metaworld, which chose the GL backend

        self._mujoco = mujoco
        self.env_spec = spec
        self.instruction = METAWORLD_INSTRUCTIONS[spec.task]
        env = env_dict.ENV_CLS_MAP[spec.task]()
        # The multi-task setting: goal in the observation, a fresh configuration per reset drawn
        # from env.np_random (reseeded by reset(seed)) instead of the global np.random.
        env._partially_observable = False
        env.__dict__.pop("sawyer_observation_space", None)  # was cached with the goal hidden
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        env._set_task_called = True
        env.max_path_length = spec.horizon
        self._env = env
        self.cameras = [env.model.camera(i).name for i in range(env.model.ncam)]
        for camera in spec.cameras:
            self._check_camera(camera)

        self._gl: Any = None  # one GL context per env, made on the first frame
        self._frames: dict[str, tuple[FrameRenderer, int]] = {}  # quality -> (renderer, max size)
        self._rotate: dict[int, bool] = {}
        self._seed_rng = np.random.default_rng(spec.seed)
        self.episode_seed: int | None = None
        self._t = 0
        self._needs_reset = True
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        spaces = {STATE_KEY: gym.spaces.Box(-np.inf, np.inf, shape=(STATE_DIM,), dtype=np.float32)}
        for camera in spec.cameras:
            shape = (spec.image_size, spec.image_size, 3)
            spaces[f"{camera}_image"] = gym.spaces.Box(0, 255, shape=shape, dtype=np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)

    # -- gymnasium API ---------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        if seed is None:
            # Unseeded resets continue the env's own stream (seeded by spec.seed or the last seed).
            seed = int(self._seed_rng.integers(0, 2**31 - 1))
        else:
            self._seed_rng = np.random.default_rng(seed)
        self.episode_seed = int(seed)
        self._env.seed(self.episode_seed)
        state, _ = self._env.reset()
        self._t = 0
        self._needs_reset = False
        return self._observe(state), {"success": False, "seed": self.episode_seed}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._needs_reset:
            raise RuntimeError("call reset() before step(): the episode has ended or not started")
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (4,):
            raise ValueError(f"action must have shape (4,) = [dx, dy, dz, gripper], got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action has non-finite values: {action}")
        state, reward, _, _, mw_info = self._env.step(np.clip(action, -1.0, 1.0))
        self._t += 1
        truncated = self._t >= self.env_spec.horizon
        self._needs_reset = truncated  # Meta-World refuses steps past its max_path_length
        info = {k: v for k, v in mw_info.items() if k != "success"}
        info["success"] = bool(mw_info["success"] > 0.5)
        # The episode ends on success (Meta-World itself never terminates; its evaluation stops there).
        return self._observe(state), float(reward), info["success"], truncated, info

    def render(
        self, camera: str | None = None, size: int = VIDEO_SIZE, quality: str | None = None
    ) -> np.ndarray:
        """An upright RGB frame (size x size) from `camera` (default: the first obs camera or corner2).

        `quality` defaults to the spec's; "full" (shadows, reflections, MSAA) is for videos and
        does not change the observations, which keep the spec's quality.
        """
        camera = camera or (self.env_spec.cameras[0] if self.env_spec.cameras else DEFAULT_VIDEO_CAMERA)
        return self.render_camera(camera, size, quality or self.env_spec.render)

    def close(self) -> None:
        if self._gl is not None:
            self._gl.make_current()
            for frames, _ in self._frames.values():
                frames.close()
            self._frames.clear()
            self._gl.free()
            self._gl = None
        self._env.close()

    # -- images ----------------------------------------------------------------------------------
    def render_camera(self, camera: str, size: int, quality: str) -> np.ndarray:
        self._check_camera(camera)
        if size <= 0:
            raise ValueError(f"image size must be positive, got {size}")
        model, data = self._env.model, self._env.data
        if self._gl is None:
            _check_gl_backend(self._mujoco)
            self._gl = self._mujoco.GLContext(size, size)
        self._gl.make_current()  # several envs may share the process
        frames, capacity = self._frames.get(quality, (None, 0))
        if frames is None or size > capacity:
            if frames is not None:
                frames.close()
            frames = FrameRenderer(model, quality, size, size)
            # Its offscreen buffer is at least the model's offwidth x offheight (640 x 480).
            capacity = max(size, min(int(model.vis.global_.offwidth), int(model.vis.global_.offheight)))
            self._frames[quality] = (frames, capacity)
        camera_id = model.camera(camera).id
        img = frames.render(data, camera_id, size, size)
        if camera_id not in self._rotate:
            self._rotate[camera_id] = _rotate_to_upright(model, data, camera_id)
        return np.ascontiguousarray(img[::-1, ::-1]) if self._rotate[camera_id] else img

    def _check_camera(self, camera: str) -> None:
        if camera not in self.cameras:
            known = ", ".join(self.cameras)
            raise ValueError(f"Meta-World has no camera {camera!r}; its cameras are: {known}")

    # -- helpers ---------------------------------------------------------------------------------
    @property
    def sim(self) -> Any:
        """The underlying Meta-World task env (a SawyerXYZEnv), for experts and tests."""
        return self._env

    def _observe(self, state: np.ndarray) -> dict[str, np.ndarray]:
        spec = self.env_spec
        obs = {STATE_KEY: np.asarray(state, dtype=np.float32)}
        for camera in spec.cameras:
            obs[f"{camera}_image"] = self.render_camera(camera, spec.image_size, spec.render)
        return obs


def _check_gl_backend(mujoco: Any) -> None:
    # mujoco fixes its GL backend when first imported; imported before setup_rendering() it
    # falls back to GLFW, which fails without a display with an obscure FatalError.
    loaded = mujoco.gl_context.GLContext.__module__.rsplit(".", 1)[-1]
    wanted = os.environ.get("MUJOCO_GL", "").lower()
    if wanted in ("egl", "osmesa") and loaded != wanted:
        raise RuntimeError(
            f"mujoco was imported with the {loaded!r} GL backend before envs.render.setup_rendering() "
            f"chose {wanted!r}; call setup_rendering() (or build envs through envs.factory.make_env) "
            "before anything imports mujoco, metaworld or robosuite"
        )


def _check_spec(spec: EnvSpec) -> None:
    if spec.simulator != "metaworld":
        raise ValueError(f"make_metaworld_env needs simulator='metaworld', got {spec.simulator!r}")
    check_task(spec.task)
    if spec.robot != "Sawyer" or spec.controller != "mocap_xyz":
        raise ValueError(
            f"Meta-World has only the Sawyer robot with its mocap_xyz controller; got robot={spec.robot!r}, "
            f"controller={spec.controller!r}. Build the spec with envs.metaworld_tasks.metaworld_spec()."
        )
    if spec.state_keys not in ([], [STATE_KEY]):
        raise ValueError(
            f"Meta-World observes one state vector, {STATE_KEY!r}; got state_keys={spec.state_keys}"
        )


def make_metaworld_env(spec: EnvSpec) -> MetaWorldEnv:
    """Build the Meta-World env a spec describes; see MetaWorldEnv."""
    return MetaWorldEnv(spec)
