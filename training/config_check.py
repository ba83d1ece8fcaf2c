"""Validation of a resolved run config, before anything is built: one line per bad value, naming the key
and the allowed range (a value Hydra passed through as text, like `data.batch_size=abc`, included)."""

from __future__ import annotations

import math
from collections.abc import Callable
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


def check(cfg: dict[str, Any], rules: list[tuple[str, tuple[Callable[[Any], bool], str]]]) -> None:
    for key, (ok, allowed) in rules:
        value = _get(cfg, key)
        if not ok(value):
            raise ConfigError(f"{key} must be {allowed}, got {value!r}")


def check_train_config(cfg: dict[str, Any]) -> None:
    """Every rule of TRAIN_RULES, then the relations between keys."""
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
