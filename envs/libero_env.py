"""LIBERO tasks behind the framework's gymnasium interface; the simulator runs in a child process under
.venv-libero's interpreter (envs/libero_process.py, envs/libero_server.py), so this module imports
nothing of LIBERO or robosuite 1.4 and is built by envs.factory.make_env like any other env.

Observations (the same keys as a store converted from the official LIBERO datasets by data.convert):
    ee_pos [3], ee_ori [3] (axis-angle), ee_states [6], gripper_states [2], joint_states [7]
        computed as LIBERO's scripts/create_dataset.py computes the datasets' keys;
    any LIBERO observation by its own name (robot0_eef_quat, object-state, <object>_pos, ...);
    <camera>_image for the spec's cameras agentview, eye_in_hand (LIBERO's robot0_eye_in_hand), upright
        (OpenGL frames flipped vertically, as data.convert flips the datasets' frames).
Actions: 7-D OSC_POSE deltas in [-1, 1], gripper -1 open / +1 close, 20 Hz.

Start states (reset): the spec's `init_state` when set; else `options["task_episode"]` k (what the
rollout workers pass: the episode's index within its task) starts from benchmark init state k mod 50;
else an evaluation seed (>= EVAL_SEED_START) s from init state (s - EVAL_SEED_START) mod 50; a
demonstration seed s (below it) from init state s mod 50 with every object moved up to PERTURB_XY
in x and y (seeded by s), so demonstrations never start from the evaluation's states. Then
SETTLE_STEPS no-op steps (not counted), as the reference evaluation does.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from envs.libero_process import LiberoProcess
from envs.libero_tasks import CAMERAS, DEFAULT_STATE_KEYS, SETTLE_STEPS, task_entry
from envs.seeds import EVAL_SEED_START
from envs.spec import EnvSpec

PERTURB_XY = 0.015  # metres: object displacement of demonstration start states
VIDEO_SIZE = 256


class LiberoEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}
    render_mode = "rgb_array"

    def __init__(self, spec: EnvSpec) -> None:
        if spec.simulator != "libero":
            raise ValueError(f"LiberoEnv builds LIBERO specs, got simulator {spec.simulator!r}")
        self.env_spec = spec
        self.n_init_states = int(task_entry(spec.suite, spec.task)["n_init_states"])
        self.state_keys = list(spec.state_keys) or list(DEFAULT_STATE_KEYS)
        unknown = [c for c in spec.cameras if c not in CAMERAS]
        if unknown:
            raise ValueError(f"unknown LIBERO camera(s) {unknown}; known: {', '.join(CAMERAS)}")
        self._proc = LiberoProcess()
        try:
            info, _ = self._proc.request("make", suite=spec.suite, task=spec.task,
                                         cameras=[CAMERAS[c] for c in spec.cameras], image_size=spec.image_size,
                                         seed=spec.seed)
            self.instruction: str = info["instruction"]
            self.task_info = info  # goal predicates, object and fixture names (for scripted experts)
            _, raw = self._proc.request("reset", init_state=0, settle_steps=0)
        except BaseException:
            self._proc.close()
            raise
        missing = [k for k in self.state_keys if k not in raw]
        if missing:
            self.close()
            known = sorted(k for k in raw if not k.endswith("_image"))
            raise ValueError(f"unknown state keys {missing} for LIBERO {spec.task}; known: {known}")
        obs = self._convert(raw)
        self.observation_space = gym.spaces.Dict(
            {k: gym.spaces.Box(0, 255, v.shape, np.uint8) if k.endswith("_image")
             else gym.spaces.Box(-np.inf, np.inf, v.shape, np.float32) for k, v in obs.items()})
        low, high = np.asarray(info["action_low"], np.float32), np.asarray(info["action_high"], np.float32)
        self.action_space = gym.spaces.Box(low, high, dtype=np.float32)
        self._rng = np.random.default_rng(spec.seed)
        self.episode_seed: int | None = None
        self.init_state: int | None = None
        self._t = 0

    def _convert(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        obs = {k: raw[k] for k in self.state_keys}
        for cam in self.env_spec.cameras:
            obs[f"{cam}_image"] = raw[f"{cam}_image"]
        return obs

    def start_state(self, seed: int, options: dict | None) -> tuple[int, int | None]:
        """(benchmark init state, perturbation seed or None) of an episode (see the module doc)."""
        n = self.n_init_states
        if self.env_spec.init_state is not None:
            return self.env_spec.init_state, None
        if options and options.get("task_episode") is not None:
            return int(options["task_episode"]) % n, None
        if seed >= EVAL_SEED_START:
            return (seed - EVAL_SEED_START) % n, None
        return seed % n, seed

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is None:  # unseeded resets continue the env's own stream, in the demonstration range
            seed = int(self._rng.integers(0, EVAL_SEED_START))
        self.episode_seed = int(seed)
        self.init_state, perturb = self.start_state(int(seed), options)
        info, raw = self._proc.request("reset", init_state=self.init_state, perturb_seed=perturb,
                                       perturb_xy=PERTURB_XY, settle_steps=SETTLE_STEPS)
        self._t = 0
        return self._convert(raw), {"success": bool(info["success"]), "seed": self.episode_seed,
                                    "init_state": self.init_state}

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {action.shape}")
        info, raw = self._proc.request("step", {"action": np.clip(action, -1.0, 1.0)})
        self._t += 1
        success = bool(info["success"])
        truncated = self._t >= self.env_spec.horizon
        return self._convert(raw), float(info["reward"]), success, truncated, {"success": success}

    def render(self, camera: str | None = None, size: int = VIDEO_SIZE, quality: str | None = None) -> np.ndarray:
        """An upright RGB frame (size x size) from `camera` (default: the first obs camera or agentview).
        `quality` is accepted for the interface; LIBERO renders at its own settings."""
        camera = camera or (self.env_spec.cameras[0] if self.env_spec.cameras else "agentview")
        _, out = self._proc.request("render", camera=CAMERAS.get(camera, camera), size=int(size))
        return out["frame"]

    # --- for demonstrations, conversion checks and tests ------------------------------------------
    def get_flat_state(self) -> np.ndarray:
        """The MuJoCo state as LIBERO's datasets store it ([time, qpos, qvel])."""
        return self._proc.request("get_state")[1]["state"]

    def object_slices(self) -> dict[str, slice]:
        """Flat-state index ranges of each object's position (its free joint), for replay drift."""
        return {name: slice(adr, adr + 3) for name, adr in self.task_info["object_joints"].items()}

    def observe_state(self, state: np.ndarray) -> dict[str, np.ndarray]:
        """Put the simulator into a flat state (no physics step) and return its observation."""
        return self._convert(self._proc.request("set_state", {"state": np.asarray(state, np.float64)})[1])

    def raw_observation(self) -> dict[str, np.ndarray]:
        """LIBERO's own observation from the last reset/step/observe_state, as LIBERO delivered it (all its keys,
        frames upside down): what LIBERO's dataset scripts record."""
        return self._proc.request("raw")[1]

    def scene(self) -> dict[str, np.ndarray]:
        """Privileged poses: body:<name>:pos/quat, site:<name>:pos, box:<name>:lo/hi (collision bounds)."""
        return self._proc.request("scene")[1]

    def close(self) -> None:
        proc, self._proc = getattr(self, "_proc", None), None
        if proc is not None:
            proc.close()
