"""Evaluating one store of a mixture-trained checkpoint (`python eval_rollouts.py ... store=NAME`).

    ckpt = restrict_to_store(ckpt, name, path)    # its tasks narrowed to the store's (before env checks)
    policy = policy_for_store(policy, ckpt)        # task indices offset; several robots: that robot's policy

A checkpoint of several robots (policies/multi_embodiment.py) needs the store: without one, or with a name it
has no normaliser for, evaluation stops in one line naming the stores it knows. A same-robot mixture
evaluates all its tasks by default, or one store's with `store=`.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from policies.base import CheckpointError


def restrict_to_store(ckpt: dict[str, Any], name: str | None, path: str | os.PathLike) -> dict[str, Any]:
    info = ckpt.get("dataset") or {}
    mixture = info.get("mixture")
    several = "embodiments" in (ckpt.get("policy") or {}).get("shape_meta", {})
    if not mixture:
        if name:
            raise CheckpointError(f"store={name}: {path} was trained on one store, not a mixture; leave store unset")
        return ckpt
    names = [m["name"] for m in mixture]
    if name is None:
        if several:
            raise CheckpointError(f"{path} was trained on several robots ({', '.join(names)}); evaluate one at a "
                                  "time: store=NAME")
        return ckpt
    if name not in names:
        raise CheckpointError(f"store={name!r}: {path} has no normaliser for it; it knows: {', '.join(names)}")
    m = mixture[names.index(name)]
    tasks = info["tasks"][m["first_task"] : m["first_task"] + m["n_tasks"]]
    return {**ckpt, "dataset": {**info, "tasks": tasks, "store": name}}


class TaskOffsetPolicy(nn.Module):
    """A same-robot mixture policy seen from one store: its tasks numbered from 0 as in the store."""

    def __init__(self, policy: Any, first_task: int) -> None:
        super().__init__()
        self.policy, self.first_task = policy, int(first_task)
        self.name, self.config, self.shape_meta = policy.name, policy.config, policy.shape_meta

    @torch.no_grad()
    def predict_action(self, obs: dict[str, torch.Tensor], goal: dict[str, torch.Tensor], generator=None):
        goal = {**goal, "task": goal["task"].long() + self.first_task}
        return self.policy.predict_action(obs, goal, generator=generator)


def policy_for_store(policy: Any, ckpt: dict[str, Any]) -> Any:
    info = ckpt.get("dataset") or {}
    name = info.get("store")
    if name is None:
        return policy
    if hasattr(policy, "for_store"):
        return policy.for_store(name)
    first = next(m["first_task"] for m in info["mixture"] if m["name"] == name)
    return TaskOffsetPolicy(policy, first)
