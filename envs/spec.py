"""The serializable description of an environment, saved in every demo store.

A spec is plain data (JSON-able) so that a dataset or a checkpoint alone can rebuild
exactly the simulator that produced it, in any process.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

ENV_SPEC_VERSION = 1
SIMULATORS = ("robosuite", "metaworld")


@dataclass
class EnvSpec:
    simulator: str  # "robosuite" | "metaworld"
    task: str  # robosuite env name ("Lift") or Meta-World v3 name ("reach-v3")
    robot: str = "Panda"
    controller: str = "OSC_POSE"
    cameras: list[str] = field(default_factory=list)  # empty: state only
    image_size: int = 84
    horizon: int = 400  # max env steps per episode
    state_keys: list[str] = field(default_factory=list)  # empty: the simulator's default set
    render: str = "fast"  # "fast" (learning) | "full" (videos)
    seed: int = 0
    version: int = ENV_SPEC_VERSION

    def __post_init__(self) -> None:
        if self.simulator not in SIMULATORS:
            raise ValueError(f"unknown simulator {self.simulator!r}; known: {', '.join(SIMULATORS)}")
        if self.image_size <= 0:
            raise ValueError(f"image_size must be positive, got {self.image_size}")
        if self.horizon <= 0:
            raise ValueError(f"horizon must be positive, got {self.horizon}")
        if self.render not in ("fast", "full"):
            raise ValueError(f"render must be 'fast' or 'full', got {self.render!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EnvSpec:
        d = dict(d)
        version = int(d.get("version", ENV_SPEC_VERSION))
        if version > ENV_SPEC_VERSION:
            raise ValueError(
                f"env spec has format version {version}, newer than this framework's {ENV_SPEC_VERSION}; "
                "upgrade the framework to use it"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown env spec fields {unknown}; known: {sorted(known)}")
        return cls(**d)

    def replace(self, **changes: Any) -> EnvSpec:
        return dataclasses.replace(self, **changes)
