"""A synthetic training batch for any policy, shaped by the policy's own config and shape_meta."""

from __future__ import annotations

import torch


def batch_for(policy, b: int = 3, seed: int = 0) -> dict:
    """Random obs for every key the policy was built for (uint8 for cameras), actions in [-2, 3),
    task ids 0..2, and language embeddings when the policy takes them."""
    g = torch.Generator().manual_seed(seed)
    to, horizon = policy.config["n_obs_steps"], policy.config["horizon"]
    obs = {}
    for key, meta in policy.shape_meta["obs"].items():
        shape = (b, to, *meta["shape"])
        obs[key] = (torch.randint(0, 256, shape, generator=g, dtype=torch.uint8) if meta["type"] == "rgb"
                    else torch.randn(*shape, generator=g))
    action_dim = policy.shape_meta["action"]["shape"][0]
    batch = {"obs": obs, "action": torch.rand(b, horizon, action_dim, generator=g) * 5 - 2,
             "action_is_pad": torch.zeros(b, horizon, dtype=torch.bool), "task": torch.arange(b) % 3}
    if policy.shape_meta["lang_dim"]:
        batch["goal"] = {"lang": torch.randn(b, policy.shape_meta["lang_dim"], generator=g)}
    return batch
