"""A policy server seen as a local policy, so the rollout runner evaluates through the network with the
same episodes, seeds and success criteria (eval_rollouts.py server=ws://HOST:PORT).

Sampling noise: the runner gives each episode its own generator; the noise is drawn here from it exactly
as the local sampler would (policies/diffusion.py initial_noise) and sent with the request, so a remote
run's actions equal the local run's. Real-time chunking: the prefix and its mask from rollouts/latency.py
travel as (prefix, delay) and the server rebuilds the same mask.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from robot_client.client import PolicyClient
from robot_client.transitions import prefix_of_weights


class RemotePolicy:
    name = "remote"

    def __init__(self, url: str, token: str | None = None, deadline_s: float = 30.0) -> None:
        self.client = PolicyClient(url, token, deadline_s=deadline_s)
        m = self.client.metadata
        self.name = f"{m['policy']} (remote)"
        self.model_hash = m["model_hash"]
        self.config = {"n_obs_steps": m["n_obs_steps"], "n_action_steps": m["n_action_steps"],
                       "horizon": m["horizon"]}
        self.shape_meta = {"obs": {k: {"shape": v["shape"]} for k, v in m["obs"].items()},
                           "action": {"shape": [m["action_dim"]]}}

    def predict_action(self, obs: dict[str, torch.Tensor], goal: dict[str, torch.Tensor], generator: Any = None,
                       prefix: torch.Tensor | None = None, prefix_weights: torch.Tensor | None = None,
                       ) -> torch.Tensor:
        n = goal["task"].shape[0]
        shape = (1, self.config["horizon"], self.shape_meta["action"]["shape"][0])
        out = []
        for i in range(n):
            kwargs: dict[str, Any] = {}
            if generator is not None:
                g = generator[i] if isinstance(generator, (list, tuple)) else generator
                kwargs["noise"] = torch.randn(shape, generator=g, device=g.device)[0].cpu().numpy()
            if prefix is not None:
                length, delay = prefix_of_weights(prefix_weights[i].cpu().numpy())
                if length:
                    kwargs.update(prefix=prefix[i, :length].cpu().numpy(), delay_steps=delay)
            row = {k: np.ascontiguousarray(v[i].cpu().numpy()) for k, v in obs.items()}
            out.append(self.client.infer(row, task=int(goal["task"][i]), **kwargs))
        return torch.from_numpy(np.stack(out))

    def close(self) -> None:
        self.client.close()
