"""The one interface every dataset reader in data/convert/ implements.

A reader turns a foreign dataset (robomimic / robosuite HDF5, LIBERO HDF5, LeRobot directory) into a
sequence of `SourceEpisode`s; `data.convert` writes them into a demo store through
`DemoStore.append_episode` (atomic per episode), so no reader ever writes anything itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


class ConvertError(ValueError):
    """Input that cannot be converted as asked: one line naming the file (and key) and what to do."""


@dataclass
class SourceTask:
    name: str  # becomes the store's task name
    instruction: str = ""  # language instruction ("" when the source has none)
    env_spec: dict[str, Any] | None = None  # envs.spec.EnvSpec.to_dict() when we can simulate it, else None


@dataclass
class SourceEpisode:
    arrays: dict[str, np.ndarray]  # per-step arrays of one length: "action" [T, Da] float32, low-dim
    #                                float32 [T, ...], cameras uint8 [T, H, W, 3] (already upright)
    task: int  # index into the reader's `tasks`
    seed: int = -1  # env seed when known
    success: bool = True  # did the demonstrator succeed (as the source says)
    source: str = ""  # where it came from, e.g. "file.hdf5:data/demo_3" (for messages and metadata)
    states: np.ndarray | None = None  # flat simulator states [T, S] when the source has them
    metadata: dict[str, Any] = field(default_factory=dict)  # JSON-able extras (model_file, ...)


class DatasetReader(Protocol):
    format: str  # "robomimic" | "robosuite" | "libero" | "lerobot"

    @property
    def tasks(self) -> list[SourceTask]: ...

    @property
    def attributes(self) -> dict[str, Any]:
        """JSON-able facts recorded in the store's attributes (source path, format version, frame flips,
        robosuite version, key renames, ...)."""
        ...

    def __len__(self) -> int:
        """Number of episodes `episodes()` yields (after filters and max_episodes)."""
        ...

    def episodes(self, skip: int = 0) -> Iterator[SourceEpisode]:
        """Episodes in a fixed order; `skip` resumes after the first `skip` (already in the store)."""
        ...
