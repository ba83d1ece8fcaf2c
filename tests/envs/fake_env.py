"""A tiny deterministic env for runner tests, built in spawned workers via "fake_env:make_env".

obs["state"] = [t, seed, last action[0], task_id]; optional obs["cam_image"] 8x8 frames.
Spec keys (all optional): horizon, succeed_at (step of success; None: never), succeed_seeds (None:
every seed), raise_on_seeds (step() raises at step 2), crash_on_seeds (the process exits at
step 2), hang_on_seeds (step 2 sleeps 120 s), fail_build,
crash_on_build (the process exits in the constructor), image, task_id, max_open (the constructor raises when
that many FakeEnvs are already open in this process: an env too big to keep several of).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np


OPEN: set[int] = set()  # ids of this process's FakeEnvs not closed yet


class FakeEnv:
    instruction = "do the fake thing"

    def __init__(self, spec: dict[str, Any]) -> None:
        if spec.get("max_open") is not None and len(OPEN) >= int(spec["max_open"]):
            raise MemoryError(f"{len(OPEN)} fake envs already open in this worker (max_open={spec['max_open']})")
        if spec.get("fail_build"):
            raise ImportError("fake simulator is not installed")
        if spec.get("crash_on_build"):
            os._exit(4)
        self.spec = spec
        self.horizon = int(spec.get("horizon", 20))
        self.t = 0
        self.seed = -1
        self.last = 0.0
        OPEN.add(id(self))

    def _obs(self) -> dict[str, np.ndarray]:
        state = np.array([self.t, self.seed, self.last, self.spec.get("task_id", 0)], dtype=np.float32)
        obs = {"state": state}
        if self.spec.get("image"):
            obs["cam_image"] = np.full((8, 8, 3), (40 * self.t) % 256, dtype=np.uint8)
        return obs

    def reset(self, seed: int | None = None, options: dict | None = None):
        self.t, self.seed, self.last = 0, int(seed), 0.0
        return self._obs(), {"success": False}

    def step(self, action):
        action = np.asarray(action, dtype=np.float32)
        assert action.shape == (2,), action.shape
        self.t += 1
        self.last = float(action[0])
        if self.t == 2 and self.seed in self.spec.get("raise_on_seeds", []):
            raise RuntimeError(f"boom at seed {self.seed}")
        if self.t == 2 and self.seed in self.spec.get("crash_on_seeds", []):
            os._exit(3)
        if self.t == 2 and self.seed in self.spec.get("hang_on_seeds", []):
            time.sleep(120)
        succeed_at, seeds = self.spec.get("succeed_at"), self.spec.get("succeed_seeds")
        success = succeed_at is not None and self.t >= succeed_at and (seeds is None or self.seed in seeds)
        # Like the framework's envs, it terminates on success.
        return self._obs(), 1.0, success, self.t >= self.horizon, {"success": success}

    def render(self) -> np.ndarray:
        return np.full((16, 16, 3), (self.t * 10) % 256, dtype=np.uint8)

    def close(self) -> None:
        OPEN.discard(id(self))


def make_env(spec: dict[str, Any], **kwargs: Any) -> FakeEnv:
    return FakeEnv({**spec, **kwargs})
