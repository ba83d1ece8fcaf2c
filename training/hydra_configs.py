"""Hydra's view of the policy defaults: each policy's config dataclass is the one source.

`conf/policy/<preset>.yaml` starts from `_<policy>_defaults` (registered here from the dataclass, so
`Policy.build(name, {})` in a notebook and `python train.py policy=name` build the same model) and
lists only what the preset changes. Entry points call `register_policy_defaults()` before composing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf


def register_policy_defaults() -> None:
    import policies  # noqa: F401  (registers every policy)
    from policies.base import POLICY_REGISTRY

    store = ConfigStore.instance()
    for name, cls in POLICY_REGISTRY.items():
        store.store(group="policy", name=f"_{name}_defaults", node={"name": name, **cls.config_cls.defaults()})


CONF_POLICY = Path(__file__).resolve().parents[1] / "conf" / "policy"


def load_policy_preset(preset: str) -> dict[str, Any]:
    """conf/policy/<preset>.yaml resolved as Hydra would (its `_<policy>_defaults` + the file's own keys), for
    scripts and benchmarks that build a policy without composing a whole run config."""
    import yaml

    import policies  # noqa: F401
    from policies.base import POLICY_REGISTRY

    path = CONF_POLICY / f"{preset}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONF_POLICY.glob("*.yaml"))
        raise ValueError(f"unknown policy preset {preset!r}; known: {', '.join(known)}")
    raw = yaml.safe_load(path.read_text()) or {}
    bases = [d for d in raw.pop("defaults", []) if isinstance(d, str) and d.endswith("_defaults")]
    if len(bases) != 1:
        raise ValueError(f"{path} must start from exactly one _<policy>_defaults entry, found {bases}")
    name = bases[0][1:].removesuffix("_defaults")
    base = {"name": name, **POLICY_REGISTRY[name].config_cls.defaults()}
    return OmegaConf.to_container(OmegaConf.merge(base, raw), resolve=True)


CONF_TASK = CONF_POLICY.parent / "task"


def load_task_config(name: str) -> dict[str, Any]:
    """conf/task/<name>.yaml as written (interpolations such as `${data.root}` left unresolved): what a task
    config says by itself, e.g. its recipe's `train_steps`."""
    import yaml

    path = CONF_TASK / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONF_TASK.glob("*.yaml"))
        raise ValueError(f"unknown task config {name!r}; known: {', '.join(known)}")
    return yaml.safe_load(path.read_text()) or {}


def compose_train_config(overrides: list[str]) -> dict[str, Any]:
    """The resolved config `python train.py *overrides` runs with (conf/config.yaml composed by Hydra's
    compose API, as train.py's main does), for tools that need to know it without training."""
    from hydra import compose, initialize_config_dir

    register_policy_defaults()
    with initialize_config_dir(config_dir=str(CONF_POLICY.parent), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


def compose_eval_config(overrides: list[str]) -> dict[str, Any]:
    """The resolved config `python eval_rollouts.py *overrides` runs with, for tools that check an evaluation
    command without running it."""
    return compose_app_config("eval", overrides)


def compose_app_config(config_name: str, overrides: list[str]) -> dict[str, Any]:
    """conf/<config_name>.yaml composed with `overrides` as that main does (eval_rollouts.py: eval,
    serve.py: serve); train.py has compose_train_config, which also registers the policy defaults."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_POLICY.parent), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)
