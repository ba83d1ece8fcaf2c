"""Validation of a resolved run config, before anything is built: one line per bad value, naming the key
and the allowed range (a value Hydra passed through as text, like `data.batch_size=abc`, included).

check_train_config is the one place train.py's values are checked (numbers, the policy's shapes, names
with a fixed set of choices, observation keys, the monitored metric, the run directory); the evaluation's
twin is training/eval_config_check.py. Checks that need the store (keys present, the batch against the
windows and memory) are check_against_store, called once the store is open, before the first step.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config value outside its allowed range; the message names the key."""


def _get(cfg: dict[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"{dotted}: missing from the config")
        node = node[part]
    return node


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


# (key, test, what the test allows): the rules every entry point shares.
Rule = tuple[str, Callable[[Any], bool], str]
INT_POS: tuple[Callable[[Any], bool], str] = (lambda v: _is_int(v) and v > 0, "an integer > 0")
INT_NONNEG: tuple[Callable[[Any], bool], str] = (lambda v: _is_int(v) and v >= 0, "an integer >= 0")
NUM_POS: tuple[Callable[[Any], bool], str] = (lambda v: _is_num(v) and v > 0, "a number > 0")
NUM_NONNEG: tuple[Callable[[Any], bool], str] = (lambda v: _is_num(v) and v >= 0, "a number >= 0")
UNIT: tuple[Callable[[Any], bool], str] = (lambda v: _is_num(v) and 0 <= v <= 1, "a number in [0, 1]")
UNIT_OPEN: tuple[Callable[[Any], bool], str] = (lambda v: _is_num(v) and 0 <= v < 1, "a number in [0, 1)")
OPT_INT_POS: tuple[Callable[[Any], bool], str] = (lambda v: v is None or (_is_int(v) and v > 0),
                                                  "null or an integer > 0")
VAL_BATCHES: tuple[Callable[[Any], bool], str] = (
    lambda v: (_is_int(v) and v >= 0) or (isinstance(v, float) and 0 < v <= 1),
    "an integer >= 0 (batches) or a fraction in (0, 1]")

TRAIN_RULES: list[tuple[str, tuple[Callable[[Any], bool], str]]] = [
    ("seed", INT_NONNEG),
    ("threads", (lambda v: v == "auto" or (_is_int(v) and v > 0), "auto or an integer > 0")),
    ("data.batch_size", INT_POS), ("data.val_batch_size", INT_POS), ("data.num_workers", INT_NONNEG),
    ("data.val_ratio", UNIT_OPEN), ("data.split_seed", INT_NONNEG), ("data.max_train_episodes", OPT_INT_POS),
    ("data.cache_mb", NUM_NONNEG),
    ("task.n_demos", INT_POS), ("task.generate_workers", INT_NONNEG),
    ("policy.n_obs_steps", INT_POS), ("policy.horizon", INT_POS), ("policy.n_action_steps", INT_POS),
    ("policy.num_sampling_steps", INT_POS),
    ("trainer.max_steps", INT_POS), ("trainer.val_check_interval", INT_POS),
    ("trainer.limit_val_batches", VAL_BATCHES), ("trainer.val_sample_batches", INT_NONNEG),
    ("trainer.log_every_n_steps", INT_POS), ("trainer.print_every_n_steps", INT_NONNEG),
    ("trainer.gradient_clip_val", (lambda v: v is None or NUM_NONNEG[0](v), "null or a number >= 0")),
    ("trainer.devices", INT_POS), ("trainer.num_nodes", INT_POS),
    ("trainer.compile", (lambda v: isinstance(v, bool), "true or false")),
    ("optim.lr", NUM_POS), ("optim.weight_decay", NUM_NONNEG), ("optim.eps", NUM_POS),
    ("optim.warmup_steps", INT_NONNEG), ("optim.min_lr_ratio", UNIT), ("optim.total_steps", INT_POS),
    ("ema.power", NUM_POS), ("ema.min_decay", UNIT_OPEN), ("ema.max_decay", UNIT_OPEN),
    ("checkpoint.save_top_k", (lambda v: _is_int(v) and v >= -1, "an integer >= -1 (-1: keep all)")),
    ("checkpoint.every_n_steps", INT_NONNEG), ("checkpoint.every_n_minutes", NUM_NONNEG),
    ("rollout_eval.every_n_steps", INT_NONNEG), ("rollout_eval.n_episodes", INT_POS),
    ("rollout_eval.workers", INT_POS), ("rollout_eval.video_n", INT_NONNEG),
    ("rollout_eval.max_steps", OPT_INT_POS),
]


NAME_MAX, PATH_MAX = 255, 4095  # Linux limits on one path component and a whole path
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")

# Policy keys, checked when the policy has them (each policy's dataclass then checks the combinations).
POLICY_RULES: list[tuple[str, tuple[Callable[[Any], bool], str]]] = [
    ("width", INT_POS), ("n_layers", INT_POS), ("n_heads", INT_POS), ("num_experts", INT_POS),
    ("top_k", INT_POS), ("expert_hidden", INT_POS), ("router_hidden", INT_NONNEG), ("state_hidden", INT_POS),
    ("mlp_hidden", INT_NONNEG), ("obs_width", INT_POS), ("goal_width", INT_POS), ("noise_emb_dim", INT_POS),
    ("n_groups", INT_POS), ("kernel_size", INT_POS),
    ("dropout", UNIT_OPEN), ("goal_dropout", UNIT_OPEN), ("dtr_sharing_ratio", UNIT),
    ("sigma_data", NUM_POS), ("sigma_min", NUM_POS), ("sigma_max", NUM_POS), ("train_sigma_min", NUM_POS),
    ("train_sigma_max", NUM_POS), ("train_sigma_scale", NUM_POS), ("lb_weight", NUM_NONNEG),
    ("z_loss_weight", NUM_NONNEG),
]


def _one_of(choices: tuple[str, ...]) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in choices, f"one of {', '.join(choices)}")


def check(cfg: dict[str, Any], rules: list[tuple[str, tuple[Callable[[Any], bool], str]]]) -> None:
    for key, (ok, allowed) in rules:
        value = _get(cfg, key)
        if not ok(value):
            raise ConfigError(f"{key} must be {allowed}, got {value!r}")


def check_output_dir(path: str | os.PathLike, key: str) -> None:
    """A directory a command will write into: not a file, not too long, inside a writable directory."""
    text = os.fspath(path)
    longest = max((len(os.fsencode(part)) for part in Path(text).parts), default=0)
    if not text or len(os.fsencode(text)) > PATH_MAX or longest > NAME_MAX:
        raise ConfigError(f"{key}={text[:60]}{'...' if len(text) > 60 else ''}: the path is too long (a name "
                          f"may have at most {NAME_MAX} bytes, a path {PATH_MAX}); choose a shorter one")
    p = Path(text).expanduser().absolute()
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{key}={text}: this is a file, not a directory; choose a directory")
    ancestor = p
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{key}={text}: cannot write under {ancestor}: it is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={text}: {ancestor} is not writable; choose a directory you can write to")


def _accelerator_present(name: str) -> bool:
    import torch

    if name in ("gpu", "cuda"):
        return torch.cuda.is_available()
    if name == "mps":
        return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    return True


def logged_metrics(cfg: dict[str, Any]) -> list[str]:
    """What a run logs (training/module.py, training/rollout_callback.py): what checkpoint.monitor can rank."""
    names = ["train/loss", "train/diffusion_loss", "train/lr", "train/grad_norm", "val/loss", "val/diffusion_loss"]
    if cfg["trainer"]["val_sample_batches"]:
        names.append("val/action_mse")
    if cfg["rollout_eval"]["every_n_steps"]:
        names += ["eval/success_rate"]
    return names


def check_policy(policy: dict[str, Any]) -> None:
    """The policy's own keys (named policy.<key>), then its dataclass's checks of their combinations."""
    from policies.diffusion import SAMPLERS

    rules = [(f"policy.{k}", r) for k, r in POLICY_RULES if k in policy]
    rules.append(("policy.sampler", _one_of(SAMPLERS)))
    check({"policy": policy}, rules)
    if "width" in policy and "n_heads" in policy and policy["width"] % policy["n_heads"]:
        raise ConfigError(f"policy.width ({policy['width']}) must be divisible by policy.n_heads "
                          f"({policy['n_heads']})")
    if "top_k" in policy and "num_experts" in policy and policy["top_k"] > policy["num_experts"]:
        raise ConfigError(f"policy.top_k must be between 1 and policy.num_experts ({policy['num_experts']}), "
                          f"got {policy['top_k']}")
    for lo, hi in (("sigma_min", "sigma_max"), ("train_sigma_min", "train_sigma_max")):
        if policy[lo] >= policy[hi]:
            raise ConfigError(f"policy.{lo} must be below policy.{hi} ({policy[hi]}), got {policy[lo]}")
    import policies  # noqa: F401  (registers every policy)
    from policies.base import POLICY_REGISTRY

    name = policy.get("name")
    if name not in POLICY_REGISTRY:
        raise ConfigError(f"policy={name} is not a policy here; one of {', '.join(sorted(POLICY_REGISTRY))}")
    try:
        POLICY_REGISTRY[name].config_cls.from_dict(policy, policy=name)
    except (TypeError, ValueError, ZeroDivisionError) as err:
        raise ConfigError(f"policy: {err}") from None


def check_obs_keys(keys: Any) -> None:
    if not (isinstance(keys, list) and keys and all(isinstance(k, str) and k for k in keys)):
        raise ConfigError(f"task.obs_keys must be a non-empty list of observation keys, got {keys!r}")
    if "action" in keys:
        raise ConfigError("task.obs_keys must not hold 'action': the action is what the policy predicts, "
                          f"not an input (got {keys})")
    if len(set(keys)) != len(keys):
        raise ConfigError(f"task.obs_keys names a key twice: {keys}")


def check_train_config(cfg: dict[str, Any]) -> None:
    """Every rule of TRAIN_RULES, then the names, the policy, and the relations between keys."""
    check(cfg, TRAIN_RULES)
    p = cfg["policy"]
    if p["n_obs_steps"] - 1 + p["n_action_steps"] > p["horizon"]:
        raise ConfigError(f"policy.horizon ({p['horizon']}) must cover n_obs_steps - 1 + n_action_steps "
                          f"({p['n_obs_steps'] - 1 + p['n_action_steps']}): the executed actions lie in the chunk")
    e = cfg["ema"]
    if e["min_decay"] > e["max_decay"]:
        raise ConfigError(f"ema.min_decay ({e['min_decay']}) must not exceed ema.max_decay ({e['max_decay']})")
    betas = cfg["optim"]["betas"]
    if not (isinstance(betas, list) and len(betas) == 2 and all(_is_num(b) and 0 <= b < 1 for b in betas)):
        raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {betas!r}")
    from data.normalize import MODES

    check(cfg, [("normalizer.action", _one_of(MODES[:3])), ("normalizer.low_dim", _one_of(MODES[:3])),
                ("trainer.accelerator", _one_of(ACCELERATORS)), ("checkpoint.mode", _one_of(("min", "max")))])
    accel = cfg["trainer"]["accelerator"]
    if not _accelerator_present(accel):
        raise ConfigError(f"trainer.accelerator={accel}: no such device on this machine; use auto or cpu")
    check_obs_keys(cfg["task"]["obs_keys"])
    check_policy(cfg["policy"])
    monitor, logged = cfg["checkpoint"]["monitor"], logged_metrics(cfg)
    if monitor is not None and monitor not in logged:
        raise ConfigError(f"checkpoint.monitor={monitor} is not a metric this run logs; one of {', '.join(logged)}"
                          " (eval/success_rate needs rollout_eval.every_n_steps > 0)")
    dataset = str(cfg["task"]["dataset"])
    if os.path.islink(dataset):
        try:
            os.path.realpath(dataset, strict=True)
        except OSError as err:
            raise ConfigError(f"task.dataset={dataset}: a broken symbolic link ({err.strerror}); point it at "
                              "a store or remove it") from None
