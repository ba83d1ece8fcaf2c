"""What a client may send a policy: the observation schema from the checkpoint, and the checks every
request passes before anything reaches the model (keys, dtypes, shapes, finite values, task or
instruction, and the real-time-chunking fields). Numpy only; the messages' contents are never logged.

    schema = ObsSchema.from_checkpoint(ckpt)          # the checkpoint's plain data
    request = schema.validate(message)                # a ValidRequest, or ProtocolError("bad_observation" | ...)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from robot_client.protocol import PROTOCOL_VERSION, ProtocolError

MAX_INSTRUCTION_CHARS = 512
MAX_DEADLINE_MS = 60_000.0


@dataclass(frozen=True)
class KeySpec:
    shape: tuple[int, ...]  # one frame; a request carries [n_obs_steps, *shape]
    dtype: str  # numpy dtype string: uint8 for cameras, float32 for low-dim


@dataclass
class ValidRequest:
    """A request that passed every check: arrays as sent (read-only views of the frame)."""

    id: int
    deadline_ms: float
    obs: dict[str, np.ndarray]
    task: int
    noise: np.ndarray | None = None  # [T, Da] initial noise of the sampler (reproduces a local run)
    prefix: np.ndarray | None = None  # [P, Da] committed actions from the observation's time on (env units)
    delay_steps: int = 0  # how many of them execute while this request is in flight


@dataclass(frozen=True)
class ObsSchema:
    keys: dict[str, KeySpec]
    n_obs_steps: int
    action_dim: int
    horizon: int
    n_action_steps: int
    tasks: tuple[str, ...]
    instructions: tuple[str, ...]

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> ObsSchema:
        meta = ckpt["policy"]
        obs = meta["shape_meta"]["obs"]
        keys = {k: KeySpec(tuple(int(n) for n in v["shape"]), "uint8" if v["type"] == "rgb" else "float32")
                for k, v in obs.items()}
        cfg = meta["config"]
        tasks = (ckpt.get("dataset") or {}).get("tasks") or []
        n_tasks = int(meta["shape_meta"].get("n_tasks", len(tasks)) or 1)
        names = [t.get("name", f"task{i}") for i, t in enumerate(tasks)] or [f"task{i}" for i in range(n_tasks)]
        instructions = [t.get("instruction", "") for t in tasks] or [""] * n_tasks
        return cls(keys, int(cfg["n_obs_steps"]), int(meta["shape_meta"]["action"]["shape"][0]),
                   int(cfg.get("horizon", cfg["n_action_steps"])), int(cfg["n_action_steps"]),
                   tuple(names), tuple(instructions))

    @property
    def chunk_len(self) -> int:
        """Actions the sampler produces from the observation's time on (horizon - (To - 1))."""
        return self.horizon - (self.n_obs_steps - 1)

    def metadata(self, control_rate_hz: float, model_hash: str, policy_name: str) -> dict[str, Any]:
        """The handshake's answer: everything a client needs to build requests."""
        return {
            "type": "metadata", "protocol": PROTOCOL_VERSION, "policy": policy_name, "model_hash": model_hash,
            "obs": {k: {"shape": list(s.shape), "dtype": s.dtype} for k, s in self.keys.items()},
            "n_obs_steps": self.n_obs_steps, "action_dim": self.action_dim, "horizon": self.horizon,
            "n_action_steps": self.n_action_steps, "control_rate_hz": float(control_rate_hz),
            "tasks": [{"name": n, "instruction": i} for n, i in zip(self.tasks, self.instructions)],
            "max_prefix": self.chunk_len,
        }

    # --- the checks ------------------------------------------------------------------------------
    def validate(self, msg: dict[str, Any], max_deadline_ms: float = MAX_DEADLINE_MS) -> ValidRequest:
        rid = msg.get("id")
        if not isinstance(rid, int) or isinstance(rid, bool) or not 0 <= rid < 2**63:
            raise ProtocolError("bad_request", "'id' must be a non-negative integer")
        deadline = msg.get("deadline_ms")
        if not isinstance(deadline, (int, float)) or isinstance(deadline, bool) or not 0 < deadline <= max_deadline_ms:
            raise ProtocolError("bad_request", f"'deadline_ms' must be a number in (0, {max_deadline_ms:g}]")
        obs = self._observation(msg.get("obs"))
        task = self._task(msg.get("task"), msg.get("instruction"))
        noise = msg.get("noise")
        if noise is not None:
            noise = self._actions("noise", noise, exact=self.horizon)
        prefix, delay = msg.get("prefix"), msg.get("delay_steps", 0)
        if prefix is not None:
            prefix = self._actions("prefix", prefix, exact=None)
        if not isinstance(delay, int) or isinstance(delay, bool) or delay < 0:
            raise ProtocolError("bad_request", "'delay_steps' must be a non-negative integer")
        if prefix is None and delay:
            raise ProtocolError("bad_request", "'delay_steps' needs a 'prefix' (the committed actions)")
        if prefix is not None and delay > len(prefix):
            raise ProtocolError("bad_request", f"'delay_steps' ({delay}) exceeds the prefix's {len(prefix)} actions")
        return ValidRequest(rid, float(deadline), obs, task, noise, prefix, delay)

    def _observation(self, obs: Any) -> dict[str, np.ndarray]:
        if not isinstance(obs, dict):
            raise ProtocolError("bad_observation", "'obs' must be a map from observation key to array")
        missing, extra = sorted(set(self.keys) - set(obs)), sorted(set(obs) - set(self.keys))
        if missing or extra:
            raise ProtocolError("bad_observation", f"observation keys differ from the schema: missing {missing}, "
                                f"unexpected {[str(k)[:40] for k in extra[:5]]}")
        for key, spec in self.keys.items():
            arr, want = obs[key], (self.n_obs_steps, *spec.shape)
            if not isinstance(arr, np.ndarray):
                raise ProtocolError("bad_observation", f"obs[{key!r}] must be an array")
            if arr.dtype != np.dtype(spec.dtype):
                raise ProtocolError("bad_observation", f"obs[{key!r}] has dtype {arr.dtype}, the schema says "
                                    f"{spec.dtype}")
            if arr.shape != want:
                raise ProtocolError("bad_observation", f"obs[{key!r}] has shape {list(arr.shape)}, the schema says "
                                    f"{list(want)} (n_obs_steps frames)")
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise ProtocolError("bad_observation", f"obs[{key!r}] holds NaN or inf")
        return dict(obs)

    def _task(self, task: Any, instruction: Any) -> int:
        if instruction is not None:
            if not isinstance(instruction, str) or len(instruction) > MAX_INSTRUCTION_CHARS:
                raise ProtocolError("bad_request", f"'instruction' must be a string of at most "
                                    f"{MAX_INSTRUCTION_CHARS} characters")
            if instruction not in self.instructions:
                raise ProtocolError("bad_request", "'instruction' is not one of the policy's task instructions "
                                    "(see the metadata's tasks)")
            return self.instructions.index(instruction)
        if task is None:
            if len(self.tasks) == 1:
                return 0
            raise ProtocolError("bad_request", "this policy has several tasks: give 'task' or 'instruction'")
        if not isinstance(task, int) or isinstance(task, bool) or not 0 <= task < len(self.tasks):
            raise ProtocolError("bad_request", f"'task' must be an integer in [0, {len(self.tasks)})")
        return task

    def _actions(self, name: str, arr: Any, exact: int | None) -> np.ndarray:
        if not isinstance(arr, np.ndarray) or arr.dtype != np.float32 or arr.ndim != 2:
            raise ProtocolError("bad_request", f"'{name}' must be a float32 array [n, {self.action_dim}]")
        n_max = exact or self.chunk_len
        if arr.shape[1] != self.action_dim or (arr.shape[0] != exact if exact else not 1 <= arr.shape[0] <= n_max):
            raise ProtocolError("bad_request", f"'{name}' has shape {list(arr.shape)}; expected "
                                f"[{exact or f'1..{n_max}'}, {self.action_dim}]")
        if not np.isfinite(arr).all():
            raise ProtocolError("bad_request", f"'{name}' holds NaN or inf")
        return arr
