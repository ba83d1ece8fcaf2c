"""The serializable description of an environment, saved in every demo store.

A spec is plain data (JSON-able) so that a dataset or a checkpoint alone can rebuild
exactly the simulator that produced it, in any process.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

ENV_SPEC_VERSION = 1
SIMULATORS = ("robosuite", "metaworld", "libero")
# Fields only some simulators use: left out of to_dict() at their defaults, so the specs of the other
# simulators (stored in datasets and checkpoints) stay as they were.
OPTIONAL_FIELDS = {"suite": "", "init_state": None}


@dataclass
class EnvSpec:
    simulator: str  # "robosuite" | "metaworld" | "libero"
    task: str  # robosuite env name ("Lift"), Meta-World v3 name ("reach-v3") or LIBERO task name
    robot: str = "Panda"
    controller: str = "OSC_POSE"
    cameras: list[str] = field(default_factory=list)  # empty: state only
    image_size: int = 84
    horizon: int = 400  # max env steps per episode
    state_keys: list[str] = field(default_factory=list)  # empty: the simulator's default set
    render: str = "fast"  # "fast" (learning) | "full" (videos)
    seed: int = 0
    version: int = ENV_SPEC_VERSION
    suite: str = ""  # LIBERO: libero_spatial | libero_object | libero_goal | libero_10 | libero_90
    init_state: int | None = None  # LIBERO: always start from this benchmark init state (None: by episode)

    def __post_init__(self) -> None:
        if self.simulator not in SIMULATORS:
            raise ValueError(f"unknown simulator {self.simulator!r}; known: {', '.join(SIMULATORS)}")
        if self.image_size <= 0:
            raise ValueError(f"image_size must be positive, got {self.image_size}")
        if self.horizon <= 0:
            raise ValueError(f"horizon must be positive, got {self.horizon}")
        if self.render not in ("fast", "full"):
            raise ValueError(f"render must be 'fast' or 'full', got {self.render!r}")
        if self.simulator == "libero":
            from envs.libero_tasks import check_init_state, task_entry

            # Unknown suite or task: the valid ones listed. A task id (its index in the suite) becomes its name.
            self.task = task_entry(self.suite, self.task)["name"]
            check_init_state(self.suite, self.task, self.init_state)
        elif self.suite or self.init_state is not None:
            raise ValueError(f"suite and init_state are LIBERO fields; this spec is {self.simulator}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: v for k, v in d.items() if k not in OPTIONAL_FIELDS or v != OPTIONAL_FIELDS[k]}

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
