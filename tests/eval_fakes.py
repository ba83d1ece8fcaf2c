"""A tiny registrable policy, its checkpoints, and a fake-env factory for evaluation tests.

`python -c "import tests.eval_fakes as f; f.main()" key=value ...` runs eval_rollouts.py's main with the
policy registered: the interrupt test runs an evaluation in a process of its own this way.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from data.normalize import Normalizer
from policies.base import Policy, register_policy
from tests.envs import fake_env

POLICY_NAME = "fake_eval_test"
PID_DIR_VAR = "EVAL_FAKES_PID_DIR"  # make_env records each worker's pid there


class FakeEvalPolicy(Policy):
    """Constant chunks [B, Ta, 2] from one parameter (so the state_dict round trip is exercised)."""

    def __init__(self, config, shape_meta, normalizer) -> None:
        super().__init__(config, shape_meta, normalizer)
        self.bias = nn.Parameter(torch.zeros(2))

    def predict_action(self, obs, goal):
        assert set(obs) == {"state"} and obs["state"].shape[1] == self.config["n_obs_steps"]
        return self.bias.expand(goal["task"].shape[0], self.config["n_action_steps"], 2) + 0.5


def register() -> None:
    register_policy(POLICY_NAME)(FakeEvalPolicy)


def write_checkpoint(path: Path, tasks: list[dict[str, Any]], **extra: Any) -> Path:
    shape_meta = {"obs": {"state": {"shape": [4], "type": "low_dim"}}, "action": {"shape": [2]},
                  "n_tasks": len(tasks), "lang_dim": 0}
    policy = FakeEvalPolicy({"n_obs_steps": 2, "n_action_steps": 2}, shape_meta, Normalizer({}, {}))
    policy.name = POLICY_NAME
    ckpt = {"policy": policy.checkpoint_dict(), "global_step": 7, "wandb_run_id": None,
            "dataset": {"path": "demo.zarr", "tasks": tasks, "demo_seeds": list(range(10))}, **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


class SlowFakeEnv(fake_env.FakeEnv):
    """fake_env's env whose steps take `step_s` seconds (spec key), so episodes are in flight for a while."""

    def step(self, action):
        time.sleep(float(self.spec.get("step_s", 0.0)))
        return super().step(action)


def make_env(spec: dict[str, Any], **kwargs: Any) -> SlowFakeEnv:
    """The env factory for workers; records the worker's pid in $EVAL_FAKES_PID_DIR when set."""
    pid_dir = os.environ.get(PID_DIR_VAR)
    if pid_dir:
        Path(pid_dir, str(os.getpid())).touch()
    return SlowFakeEnv({**spec, **kwargs})


def main() -> None:
    """`python eval_rollouts.py` with this policy registered (overrides from sys.argv[1:])."""
    import runpy

    register()
    script = Path(__file__).resolve().parents[1] / "eval_rollouts.py"
    sys.argv = [str(script), *sys.argv[1:]]
    runpy.run_path(str(script), run_name="__main__")  # as a script: Hydra finds conf/ beside it
