"""Meta-World's own scripted policies (metaworld.policies.ENV_POLICY_MAP) as framework experts.

Each policy is a stateless function of the 39-d state (hand, gripper, object poses, goal);
the expert feeds it the observation's state and clips the result to the action space, so
the recorded action is exactly the one the simulator executes.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from envs.metaworld_tasks import STATE_KEY, check_task, import_metaworld
from envs.spec import EnvSpec


class MetaWorldExpert:
    def __init__(self, spec: EnvSpec):
        if spec.simulator != "metaworld":
            raise ValueError(f"MetaWorldExpert needs a Meta-World spec, got simulator={spec.simulator!r}")
        check_task(spec.task)
        import_metaworld()  # fixes the GL backend before metaworld.policies imports mujoco
        from metaworld.policies import ENV_POLICY_MAP

        if spec.task not in ENV_POLICY_MAP:
            raise ValueError(f"Meta-World ships no scripted policy for {spec.task!r}")
        self.spec = spec
        self._policy = ENV_POLICY_MAP[spec.task]()

    def reset(self, env: Any) -> None:
        # The built-in policies keep no state between steps.
        return None

    def act(self, env: Any, obs: dict[str, np.ndarray]) -> np.ndarray:
        state = np.asarray(obs[STATE_KEY], dtype=np.float64)
        with warnings.catch_warnings():
            # The policies' P-gains are large on purpose and warn on every saturated step.
            warnings.filterwarnings("ignore", message="Constant\\(s\\) may be too high")
            action = self._policy.get_action(state)
        return np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
