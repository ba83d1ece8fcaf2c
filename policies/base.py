"""The Policy interface every model implements, and checkpoint save/load that needs only the file.

Checkpoint contract: any checkpoint file (ours or a Lightning .ckpt) holds
  ckpt["policy"] = {"name": str, "config": dict, "shape_meta": dict,
                    "normalizer": dict, "state_dict": {...}}
with plain data only, so `torch.load(weights_only=True)` reads it and nothing is unpickled.

shape_meta = {"obs": {key: {"shape": [...], "type": "low_dim" | "rgb"}},
              "action": {"shape": [Da]}, "n_tasks": int, "lang_dim": int (0: no language)}
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import torch
from torch import nn

from data.normalize import Normalizer

POLICY_REGISTRY: dict[str, type[Policy]] = {}
CHECKPOINT_FORMAT_VERSION = 1  # bump when the layout below changes incompatibly


def register_policy(name: str):
    def deco(cls: type[Policy]) -> type[Policy]:
        cls.name = name
        POLICY_REGISTRY[name] = cls
        return cls

    return deco


class Policy(nn.Module):
    """A diffusion policy: batch -> loss for training, observations -> action chunk for control."""

    name: ClassVar[str] = "base"

    def __init__(self, config: dict[str, Any], shape_meta: dict[str, Any], normalizer: Normalizer) -> None:
        super().__init__()
        self.config = dict(config)
        self.shape_meta = shape_meta
        self.normalizer = normalizer

    # --- the interface -------------------------------------------------------------------
    def compute_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """batch as in docs/architecture.md -> (scalar loss, metrics). Metrics stay tensors (no host sync)."""
        raise NotImplementedError

    def predict_action(self, obs: dict[str, torch.Tensor], goal: dict[str, torch.Tensor]) -> torch.Tensor:
        """obs {key: [B, To, ...]} in env units, goal {"task": [B], "lang"?: [B, D]} -> [B, Ta, Da].
        A sampling policy may also take `generator=`: one torch.Generator, or one per batch row (the
        evaluation runner gives each episode its own, rollouts/plan.py episode_generator)."""
        raise NotImplementedError

    # --- checkpoints ---------------------------------------------------------------------
    def checkpoint_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "config": self.config,
            "shape_meta": self.shape_meta,
            "normalizer": self.normalizer.config(),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }

    def save(self, path: str | os.PathLike) -> None:
        torch.save({"policy": self.checkpoint_dict(), "format_version": CHECKPOINT_FORMAT_VERSION}, path)

    @staticmethod
    def build(name: str, config: dict, shape_meta: dict, normalizer: Normalizer) -> Policy:
        import policies  # noqa: F401  (registers every policy)

        if name not in POLICY_REGISTRY:
            raise ValueError(f"unknown policy {name!r}; known: {', '.join(sorted(POLICY_REGISTRY))}")
        cls = POLICY_REGISTRY[name]
        if "embodiments" in shape_meta:  # several robots: per-embodiment layers (policies/multi_embodiment.py)
            from policies.multi_embodiment import multi_embodiment_class

            cls = multi_embodiment_class(cls)
        return cls(config, shape_meta, normalizer)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, map_location: str = "cpu") -> Policy:
        """Rebuild a policy (config, normalizer, weights) from a checkpoint file alone."""
        return cls.from_checkpoint_dict(read_checkpoint_file(path, map_location)["policy"], str(path))

    @classmethod
    def from_checkpoint_dict(cls, meta: dict[str, Any], where: str = "checkpoint") -> Policy:
        """Rebuild from the `policy` entry of a checkpoint already read (see read_checkpoint_file)."""
        if cls is not Policy and meta["name"] != cls.name:
            raise CheckpointError(f"{where} holds a {meta['name']!r} policy, not a {cls.name!r} policy")
        normalizer = Normalizer.from_config(meta["normalizer"])
        policy = Policy.build(meta["name"], meta["config"], meta["shape_meta"], normalizer)
        policy.load_state_dict(meta["state_dict"])
        policy.eval()
        return policy


def compile_loss(policy: Policy, graphs: bool = False):
    """torch.compile of policy.compute_loss: the training step `trainer.compile=true` runs (the MoE op is
    one custom op with a fake and a backward, kernels/moe.py). `graphs` (CUDA only) replays CUDA graphs
    (mode=reduce-overhead). The optimizer step stays eager."""
    return torch.compile(policy.compute_loss, mode="reduce-overhead" if graphs else None)


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint of this framework; the message says what it is."""


def read_checkpoint_file(path: str | os.PathLike, map_location: str = "cpu") -> dict[str, Any]:
    """The one place a checkpoint file is read: plain data only (`weights_only=True`), nothing unpickled.

    A file torch refuses (corrupt, truncated, or pickling arbitrary objects) is reported as not being
    a checkpoint of this framework; torch's own advice to load it unsafely is deliberately not passed on.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist or is not a file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        kind = "truncated or corrupt" if isinstance(err, (EOFError, RuntimeError)) else "not plain tensor data"
        raise CheckpointError(f"{path!r} is not a checkpoint of this framework ({kind}: "
                              f"{type(err).__name__}); use a .ckpt written by train.py") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("policy"), dict):
        raise CheckpointError(f"{path!r} is not a checkpoint of this framework (no 'policy' entry); use a .ckpt "
                              "written by train.py or Policy.save")
    version = int(ckpt.get("format_version", 1))
    if version > CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(f"{path!r} has checkpoint format version {version}, newer than this framework's "
                              f"{CHECKPOINT_FORMAT_VERSION}; upgrade the framework to read it")
    return ckpt
