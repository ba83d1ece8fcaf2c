"""What a suite run trains with beyond its command line: the config train.py resolves from it.

The config hash (runner.config_hash) covers the commands, so it misses a changed default: a field of a
policy's config dataclass, a preset in conf/policy, a task recipe in conf/task. The runner therefore
also compares the config the command resolves to now (training/hydra_configs.py compose_train_config)
with the one the run trained with (its train/config.yaml, which train.py wrote from the same
resolution, or for a restored run the `train_config` its result.json keeps), less the keys that only
place files or set threads. A key the run's config lacks is an option added since, and options are
added with a default that keeps the old behaviour: it is not a change. Any other difference makes the
run another configuration, which the runner refuses to mix in, naming the keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# where files go and how many threads run: not what the numbers depend on (paths move with out=)
IGNORED = ("run_dir", "resume", "threads", "logger", "task.dataset", "data.root", "data.cache_dir")


def flat(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{dotted key: leaf value} of a nested config, the ignored keys left out."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if name in IGNORED:
            continue
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{name}."))
        else:
            out[name] = value
    return out


def train_config(train_argv: list[str]) -> dict[str, Any]:
    """The flat resolved config of `python train.py ...` (argv as runner.train_argv builds it)."""
    from training.hydra_configs import compose_train_config

    script = next(i for i, a in enumerate(train_argv) if a.endswith("train.py"))
    return flat(compose_train_config(train_argv[script + 1:]))


def run_config(train_dir: Path) -> dict[str, Any] | None:
    """The flat config a run trained with, as train.py saved it (None: not here, e.g. a restored run)."""
    import yaml

    try:
        cfg = yaml.safe_load((train_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return flat(cfg) if isinstance(cfg, dict) else None


def config_changes(now: dict[str, Any], trained: dict[str, Any]) -> list[str]:
    """'key: trained -> now' for every key of the run's config whose value differs now or that is gone."""
    gone = "<no such key now>"
    return [f"{k}: {trained[k]!r} -> {now.get(k, gone)!r}" for k in sorted(trained) if now.get(k, gone) != trained[k]]
