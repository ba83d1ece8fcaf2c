"""What every benchmark shares: the JSON-line record format of docs/architecture.md and a median timer."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Make the project importable when a benchmark is run as `python benchmarks/<name>.py`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def device_name(device: str = "cpu") -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0).replace(" ", "-")
    return "cpu"


class Recorder:
    """Prints one JSON object per line and, with `save`, appends them to results/<bench>-<device>.jsonl."""

    def __init__(self, bench: str, device: str = "cpu", save: bool = False) -> None:
        self.bench, self.device, self.save = bench, device, save
        self.records: list[dict[str, Any]] = []

    def emit(self, case: str, metric: str, value: float, unit: str = "", **context: Any) -> dict[str, Any]:
        rec = {"bench": self.bench, "case": case, "metric": metric, "value": round(float(value), 6),
               "unit": unit, "device": device_name(self.device), "torch": torch.__version__.split("+")[0],
               "host_cpus": os.cpu_count(), "machine": platform.machine(), **context}
        print(json.dumps(rec), flush=True)
        self.records.append(rec)
        return rec

    def ratio(self, case: str, metric: str, value: float, **context: Any) -> dict[str, Any]:
        return self.emit(case, metric, value, unit="x", **context)

    def finish(self, rollouts: Path) -> None:
        """The end of a rollout benchmark: where its rollouts went, and the results file when --save."""
        print(f"# rollouts in {rollouts}")
        path = self.write()
        if path:
            print(f"# wrote {path}")

    def write(self) -> Path | None:
        if not self.save or not self.records:
            return None
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"{self.bench}-{device_name(self.device)}.jsonl"
        with path.open("w") as f:
            for rec in self.records:
                f.write(json.dumps(rec) + "\n")
        return path


# Lift's state observation (robot0_* proprioception + object-state) and 7-d OSC_POSE actions.
LIFT_STATE = {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2, "object-state": 10}
LIFT_ACTION_DIM = 7


def lift_state_setup(n_rows: int = 256, seed: int = 0):
    """(normalizer, shape_meta) of a Lift-shaped state task, fitted on random rows: enough to build and
    time any policy without a dataset."""
    import numpy as np

    from data.normalize import Normalizer

    rng = np.random.default_rng(seed)
    arrays = {k: rng.normal(size=(n_rows, d)).astype(np.float32) for k, d in LIFT_STATE.items()}
    arrays["action"] = rng.uniform(-1, 1, size=(n_rows, LIFT_ACTION_DIM)).astype(np.float32)
    normalizer = Normalizer.fit(arrays, {k: "limits" for k in arrays})
    shape_meta = {"obs": {k: {"shape": [d], "type": "low_dim"} for k, d in LIFT_STATE.items()},
                  "action": {"shape": [LIFT_ACTION_DIM]}, "n_tasks": 1, "lang_dim": 0}
    return normalizer, shape_meta


def median_seconds(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1,
                   sync: Callable[[], Any] | None = None) -> float:
    """Median wall time of `fn` over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_expert_episode(env, expert, seed: int) -> tuple[bool, int]:
    """One scripted-expert episode from `seed`: (success, steps taken; the horizon when it failed)."""
    obs, _ = env.reset(seed=seed)
    expert.reset(env)
    for step in range(1, env.env_spec.horizon + 1):
        obs, _, terminated, truncated, info = env.step(expert.act(env, obs))
        if info["success"]:
            return True, step
        if terminated or truncated:
            break
    return False, env.env_spec.horizon
