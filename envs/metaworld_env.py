"""Meta-World 3.1.1 behind the framework's env interface (gymnasium API, dict observations).

Built on the task classes directly rather than on `gym.make("Meta-World/MT1")`: MT1 draws 50
fixed goal configurations up front and picks among them with its own generator, so a seed
would not name one configuration and every env would pay 50 resets at construction. Here
`reset(seed)` reseeds the task's generator and draws the object and goal positions from the
task's full random range, as MT1 does (goal observable, the multi-task setting).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from envs.metaworld_tasks import METAWORLD_INSTRUCTIONS, STATE_KEY, check_task, import_metaworld
from envs.spec import EnvSpec

STATE_DIM = 39
VIDEO_SIZE = 256  # default render() size; observations use spec.image_size
FAST_SHADOW_SIZE = 512


def _upright_transform(model: Any, data: Any, camera: str) -> bool:
    """Whether the camera's raw image must be rotated 180 degrees to come out upright.

    Upright means the image's up is world +z; for a camera looking straight down it means
    world +y (the far side of the table at the top). The corner cameras are defined with
    their up axis pointing below the horizon, so their images come out upside down.
    """
    cam_id = model.camera(camera).id
    axes = data.cam_xmat[cam_id].reshape(3, 3)  # columns: camera x (right), y (up), z (backward)
    up, forward = axes[:, 1], -axes[:, 2]
    if abs(forward[2]) > 0.9:
        return bool(up[1] < 0)
    return bool(up[2] < 0)


class MetaWorldEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, spec: EnvSpec, render_camera: str | None = None, render_size: int = VIDEO_SIZE):
        _check_spec(spec)
        env_dict = import_metaworld()
        import mujoco  # after import_metaworld, which fixed the GL backend

        self._mujoco = mujoco
        self.env_spec = spec
        self.instruction = METAWORLD_INSTRUCTIONS[spec.task]
        self.render_mode = "rgb_array"
        self.metadata = {**self.metadata, "render_fps": 0}

        env = env_dict.ENV_CLS_MAP[spec.task]()
        # The multi-task setting: goal in the observation, a fresh configuration per reset drawn
        # from env.np_random (reseeded by reset(seed)) instead of the global np.random.
        env._partially_observable = False
        env.__dict__.pop("sawyer_observation_space", None)  # cached with the goal hidden
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        env._set_task_called = True
        env.max_path_length = spec.horizon
        self._env = env
        self.metadata["render_fps"] = round(1.0 / env.dt)

        model = env.model
        cameras = [model.camera(i).name for i in range(model.ncam)]
        render_camera = render_camera or (spec.cameras[0] if spec.cameras else "corner2")
        for cam in [*spec.cameras, render_camera]:
            if cam not in cameras:
                raise ValueError(
                    f"Meta-World has no camera {cam!r}; its cameras are: {', '.join(cameras)}"
                )
        if render_size <= 0:
            raise ValueError(f"render_size must be positive, got {render_size}")
        self._render_camera, self._render_size = render_camera, render_size
        if spec.render == "fast":
            # Shadow maps, reflections and multisampling cost ~10x the frame time under
            # software GL and add little for learning at 84x84.
            model.vis.quality.shadowsize = FAST_SHADOW_SIZE
            model.vis.quality.offsamples = 0
        size = max(spec.image_size, render_size)
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), size)
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), size)
        self._renderers: dict[int, Any] = {}
        self._rotate: dict[str, bool] = {}  # filled after the first reset (camera poses need mj_forward)

        self._pending_seed = spec.seed
        self._steps = 0
        self._needs_reset = True
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        obs_space = {STATE_KEY: gym.spaces.Box(-np.inf, np.inf, shape=(STATE_DIM,), dtype=np.float32)}
        for cam in spec.cameras:
            shape = (spec.image_size, spec.image_size, 3)
            obs_space[f"{cam}_image"] = gym.spaces.Box(0, 255, shape=shape, dtype=np.uint8)
        self.observation_space = gym.spaces.Dict(obs_space)

    # --- gymnasium API -------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        # Without a seed, the first reset uses spec.seed and later ones continue its stream.
        if seed is None and self._pending_seed is not None:
            seed = self._pending_seed
        self._pending_seed = None
        if seed is not None:
            self._env.seed(int(seed))
        state, _ = self._env.reset()
        self._steps = 0
        self._needs_reset = False
        return self._observe(state), {"success": False}

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._needs_reset:
            raise RuntimeError("call reset() before step(): the episode is over or has not started")
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (4,):
            raise ValueError(f"Meta-World actions have shape (4,) = [dx, dy, dz, gripper]; got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action has non-finite values: {action}")
        state, reward, _, _, mw_info = self._env.step(np.clip(action, -1.0, 1.0))
        self._steps += 1
        # Meta-World never terminates an episode on success; runners decide when to stop.
        truncated = self._steps >= self.env_spec.horizon
        self._needs_reset = truncated
        info = {k: v for k, v in mw_info.items() if k != "success"}
        info["success"] = bool(mw_info["success"] > 0.5)
        return self._observe(state), float(reward), False, truncated, info

    def render(self, camera: str | None = None, size: int | None = None) -> np.ndarray:
        """An upright RGB frame (uint8 [size, size, 3]) for videos, by default of the render camera."""
        return self.render_camera(camera or self._render_camera, size or self._render_size)

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
        self._env.close()

    # --- images --------------------------------------------------------------------------------

    @property
    def cameras(self) -> list[str]:
        model = self._env.model
        return [model.camera(i).name for i in range(model.ncam)]

    def render_camera(self, camera: str, size: int) -> np.ndarray:
        if camera not in self.cameras:
            raise ValueError(f"Meta-World has no camera {camera!r}; its cameras are: {', '.join(self.cameras)}")
        mujoco = self._mujoco
        renderer = self._renderers.get(size)
        if renderer is None:
            model = self._env.model
            size_limit = min(int(model.vis.global_.offwidth), int(model.vis.global_.offheight))
            if size > size_limit:
                raise ValueError(f"render size {size} exceeds this env's offscreen buffer ({size_limit})")
            renderer = mujoco.Renderer(model, size, size)
            if self.env_spec.render == "fast":
                renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
                renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
            self._renderers[size] = renderer
        renderer.update_scene(self._env.data, camera=camera)
        img = renderer.render()
        if camera not in self._rotate:
            self._rotate[camera] = _upright_transform(self._env.model, self._env.data, camera)
        if self._rotate[camera]:
            img = img[::-1, ::-1]
        return np.ascontiguousarray(img)

    # --- helpers -------------------------------------------------------------------------------

    @property
    def sim(self) -> Any:
        """The underlying Meta-World task env (SawyerXYZEnv), for experts and tests."""
        return self._env

    def _observe(self, state: np.ndarray) -> dict[str, np.ndarray]:
        obs = {STATE_KEY: np.asarray(state, dtype=np.float32)}
        for cam in self.env_spec.cameras:
            obs[f"{cam}_image"] = self.render_camera(cam, self.env_spec.image_size)
        return obs


def _check_spec(spec: EnvSpec) -> None:
    if spec.simulator != "metaworld":
        raise ValueError(f"make_metaworld_env needs a spec with simulator='metaworld', got {spec.simulator!r}")
    check_task(spec.task)
    if spec.robot != "Sawyer" or spec.controller != "mocap_xyz":
        raise ValueError(
            f"Meta-World has only the Sawyer robot with its mocap_xyz controller; got robot={spec.robot!r}, "
            f"controller={spec.controller!r}. Build the spec with envs.metaworld_tasks.metaworld_spec()."
        )
    if spec.state_keys not in ([], [STATE_KEY]):
        raise ValueError(
            f"Meta-World observes one state vector, key {STATE_KEY!r}; got state_keys={spec.state_keys}"
        )


def make_metaworld_env(spec: EnvSpec, render_camera: str | None = None, render_size: int = VIDEO_SIZE) -> MetaWorldEnv:
    """Build the Meta-World env a spec describes; see MetaWorldEnv."""
    return MetaWorldEnv(spec, render_camera=render_camera, render_size=render_size)
