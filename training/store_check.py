"""The run config against its store, before the first step: observation keys present, the batch in memory.

A batch far larger than the machine's memory was killed by the kernel after a minute with no message;
the estimate here is coarse (the batch's inputs plus the transformer's activations, with a margin for
the backward pass) and errs on the large side, so a refusal is one line naming data.batch_size, the
estimate and the memory available.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from data.store import DemoStore, StoreError
from training.config_check import ConfigError

# float32 values kept per token and model-width unit per layer through forward and backward (attention,
# the MLP or experts' hidden units, norms, gradients): a coarse upper bound, not a measurement.
ACTIVATION_FLOATS_PER_UNIT = 16


def available_memory_bytes() -> int | None:
    """This process's memory budget: the cgroup limit when one is set, else the kernel's MemAvailable."""
    limit: int | None = None
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if text.isdigit():
            limit = int(text)
    except OSError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                return min(avail, limit) if limit else avail
    except (OSError, ValueError, IndexError):
        pass
    return limit


def batch_bytes(cfg: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> int:
    """Estimated bytes one training step needs for data.batch_size samples."""
    p = cfg["policy"]
    to, horizon = p["n_obs_steps"], p["horizon"]
    inputs = sum(to * math.prod(shapes[k]) for k in cfg["task"]["obs_keys"]) + horizon * math.prod(shapes["action"])
    width = p.get("width") or max(p.get("down_dims") or [256])
    layers = p.get("n_layers") or len(p.get("down_dims") or [1, 1, 1]) * 2
    tokens = 2 + to * len(cfg["task"]["obs_keys"]) + horizon
    per_sample = 4 * (inputs + tokens * width * layers * ACTIVATION_FLOATS_PER_UNIT)
    return int(cfg["data"]["batch_size"]) * per_sample


def check_against_store(cfg: dict[str, Any]) -> None:
    """Refuse observation keys the store lacks and a batch that cannot fit in memory (when the store
    exists; a store about to be generated is checked again once it does)."""
    path = cfg["task"]["dataset"]
    if not os.path.exists(path):
        return
    try:
        store = DemoStore.open(path)
    except StoreError:
        return  # ensure_dataset names what is wrong with it
    if not store.n_episodes:
        return  # an empty store is ensure_dataset's to fill or refuse
    missing = [k for k in cfg["task"]["obs_keys"] if k not in store.keys]
    if missing:
        have = [k for k in store.keys if k != "action"]
        raise ConfigError(f"task.obs_keys: {missing} not in {path}; it holds {', '.join(have)}")
    shapes = {k: tuple(store.array(k).shape[1:]) for k in [*cfg["task"]["obs_keys"], "action"]}
    need, avail = batch_bytes(cfg, shapes), available_memory_bytes()
    if avail is not None and need > avail:
        raise ConfigError(f"data.batch_size={cfg['data']['batch_size']}: a step needs an estimated "
                          f"{need / 2**30:.1f} GB and {avail / 2**30:.1f} GB of memory are available (the store "
                          f"holds {store.n_steps} windows); lower data.batch_size")
