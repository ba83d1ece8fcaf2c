"""The served policy: built once from a checkpoint (plain data, weights_only=True), answering batches of
validated requests. Runs on the inference thread only (serving/batcher.py); never on the event loop.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from typing import Any

import numpy as np
import torch

from policies.base import CheckpointError, Policy, read_checkpoint_file
from robot_client.transitions import soft_prefix_weights
from serving.schema import ObsSchema, ValidRequest

PRECISIONS = ("fp32", "bf16", "int8")


class ServeError(RuntimeError):
    """A problem the user starting the server can fix: one line."""


def model_hash(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over the weights' names, shapes and bytes: which model answers, in 16 hex digits."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class ServedModel:
    def __init__(self, policy: Any, schema: ObsSchema, model_hash: str, device: torch.device) -> None:
        self.policy, self.schema, self.model_hash, self.device = policy, schema, model_hash, device
        params = inspect.signature(policy.predict_action).parameters
        self.takes_noise = "noise" in params
        self.supports_rtc = "prefix" in params

    @classmethod
    def load(cls, path: str | os.PathLike, precision: str = "fp32", device: str = "cpu",
             compile: str | None = None) -> ServedModel:
        """`compile`: none | step | loop | graph in place of the checkpoint's (MoDE; policies/compiled_sampling.py)."""
        if precision not in PRECISIONS:
            raise ServeError(f"precision={precision!r}: choose one of {', '.join(PRECISIONS)}")
        try:
            ckpt = read_checkpoint_file(path)
            policy = Policy.from_checkpoint_dict(ckpt["policy"], str(path))
            schema = ObsSchema.from_checkpoint(ckpt)
        except CheckpointError as err:
            raise ServeError(str(err)) from None
        except (ValueError, KeyError, TypeError, RuntimeError) as err:
            raise ServeError(f"cannot rebuild the policy from {path}: {str(err).splitlines()[0]}") from None
        digest = model_hash(ckpt["policy"]["state_dict"])
        policy = policy.to(device).eval()
        if compile is not None:
            from policies.mode import COMPILE_MODES

            if "compile" not in vars(policy.net) or compile not in COMPILE_MODES:
                raise ServeError(f"compile={compile!r}: only a MoDE policy compiles, with one of "
                                 f"{', '.join(COMPILE_MODES)}")
            policy.net.compile = compile
        if precision != "fp32":
            from policies.quantize import quantize_policy

            try:
                policy = quantize_policy(policy, precision)
            except ValueError as err:
                raise ServeError(str(err)) from None
        return cls(policy, schema, digest, torch.device(device))

    def warm_up(self) -> None:
        """One call on a zero observation, so the first client does not pay for lazy initialisation."""
        s = self.schema
        obs = {k: np.zeros((s.n_obs_steps, *spec.shape), dtype=spec.dtype) for k, spec in s.keys.items()}
        self.predict([ValidRequest(0, 1.0, obs, 0)])

    def predict(self, requests: list[ValidRequest]) -> list[np.ndarray]:
        """One batched predict_action for `requests` -> one [Ta, Da] float32 array per request."""
        s, dev = self.schema, self.device
        obs = {k: torch.from_numpy(np.stack([r.obs[k] for r in requests])).to(dev) for k in s.keys}
        goal = {"task": torch.tensor([r.task for r in requests], dtype=torch.int64, device=dev)}
        kwargs: dict[str, Any] = {}
        if self.takes_noise and any(r.noise is not None for r in requests):
            kwargs["noise"] = torch.from_numpy(np.stack([
                r.noise if r.noise is not None else np.random.standard_normal((s.horizon, s.action_dim))
                for r in requests]).astype(np.float32))
        if any(r.prefix is not None for r in requests):
            n = max(len(r.prefix) for r in requests if r.prefix is not None)
            prefix = np.zeros((len(requests), n, s.action_dim), dtype=np.float32)
            weights = torch.zeros((len(requests), n))
            for i, r in enumerate(requests):
                if r.prefix is not None:
                    prefix[i, : len(r.prefix)] = r.prefix
                    weights[i] = torch.from_numpy(soft_prefix_weights(len(r.prefix), r.delay_steps, n))
            kwargs.update(prefix=torch.from_numpy(prefix), prefix_weights=weights)
        with torch.inference_mode():
            action = self.policy.predict_action(obs, goal, **kwargs)
        out = action.detach().float().cpu().numpy()
        return [np.ascontiguousarray(a) for a in out]
