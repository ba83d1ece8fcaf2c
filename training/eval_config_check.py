"""The evaluation's twin of training/config_check.py: every value of conf/eval.yaml checked in one place,
before the policy is built or a worker started; one line naming the key, the value and the valid range.

    check_eval_config(cfg)                              # the values alone
    check_eval_against_policy(cfg, policy, tasks)       # the values against the checkpoint's policy and tasks
    claim_out_dir(out, overwrite)                       # an earlier evaluation's results are never mixed in
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.config_check import (
    INT_NONNEG,
    INT_POS,
    NUM_POS,
    OPT_INT_POS,
    ConfigError,
    _is_int,
    _is_num,
    _one_of,
    check,
    check_output_dir,
)

MIN_WORKER_TIMEOUT_S = 5.0  # below this a worker cannot build its simulator: every episode would time out
PRECISIONS = ("fp32", "bf16", "int8")
# What an evaluation writes into `out` (training/evaluate.py, rollouts/report.py): a directory holding only
# these is an earlier evaluation's, replaced whole with overwrite=true; anything else there is not ours.
EVAL_OUTPUTS = frozenset({"eval_info.json", "videos", "success_per_task.png"})

BOOL: tuple[Callable[[Any], bool], str] = (lambda v: isinstance(v, bool), "true or false")
OPT_INT_NONNEG: tuple[Callable[[Any], bool], str] = (lambda v: v is None or (_is_int(v) and v >= 0),
                                                     "null or an integer >= 0")
EVAL_RULES: list[tuple[str, tuple[Callable[[Any], bool], str]]] = [
    ("n_episodes", INT_POS), ("workers", INT_POS),
    ("worker_timeout_s", (lambda v: _is_num(v) and v >= MIN_WORKER_TIMEOUT_S,
                          f"a number of seconds >= {MIN_WORKER_TIMEOUT_S:g} (a worker builds its simulator "
                          "within it)")),
    ("seed_offset", OPT_INT_NONNEG), ("max_steps", OPT_INT_POS), ("n_action_steps", OPT_INT_POS),
    ("sample_seed", OPT_INT_NONNEG),
    ("seeds", (lambda v: v is None or (isinstance(v, list) and all(_is_int(s) and s >= 0 for s in v)),
               "null or a list of integers >= 0")),
    ("stop_on_success", BOOL), ("progress", BOOL), ("overwrite", BOOL), ("allow_errors", BOOL),
    ("precision", _one_of(PRECISIONS)),
    ("video.n", INT_NONNEG), ("video.fps", NUM_POS),
    ("video.source", (lambda v: isinstance(v, str) and v != "", "render or an image observation key")),
]


def check_eval_config(cfg: dict[str, Any]) -> None:
    """The values of conf/eval.yaml on their own (the checkpoint not read yet)."""
    check(cfg, EVAL_RULES)
    if cfg["out"] is not None:
        check_output_dir(str(cfg["out"]), "out")


def image_keys(policy: Any, tasks: list[dict[str, Any]]) -> list[str]:
    """Image observations the evaluation's envs give: the policy's and each task's cameras."""
    keys = {k for k, m in (getattr(policy, "shape_meta", None) or {}).get("obs", {}).items()
            if m.get("type") == "rgb"}
    for t in tasks:
        keys.update(f"{c}_image" for c in (t.get("env_spec") or {}).get("cameras", []) or [])
    return sorted(keys)


def check_eval_against_policy(cfg: dict[str, Any], policy: Any, tasks: list[dict[str, Any]]) -> None:
    """The knobs whose valid range the checkpoint sets."""
    config = getattr(policy, "config", None) or {}
    chunk = config.get("n_action_steps")
    if cfg["n_action_steps"] is not None and chunk is not None and cfg["n_action_steps"] > chunk:
        raise ConfigError(f"n_action_steps must be null or between 1 and {chunk} (the actions the policy "
                          f"returns per chunk), got {cfg['n_action_steps']}")
    source = cfg["video"]["source"]
    if cfg["video"]["n"] and source != "render" and cfg["env_factory"] is None:
        keys = image_keys(policy, tasks)
        if source not in keys:
            raise ConfigError(f"video.source must be render or an image observation key of these tasks "
                              f"({', '.join(keys) or 'they have no cameras'}), got {source!r}")


def claim_out_dir(out: Path, overwrite: bool) -> bool:
    """Refuse an `out` that holds results unless `overwrite`; True when it must be emptied before writing.
    A directory holding anything an evaluation does not write is never emptied."""
    if not out.is_dir():
        return False
    held = {p.name for p in out.iterdir()}
    if not held:
        return False
    if not held <= EVAL_OUTPUTS:
        raise ConfigError(f"out={out} holds files an evaluation does not write ({', '.join(sorted(held)[:4])}); "
                          "choose a new or empty directory")
    if not overwrite:
        raise ConfigError(f"out={out} already holds an evaluation's results; choose another directory, or pass "
                          "overwrite=true to replace them whole")
    return True


def empty_out_dir(out: Path) -> None:
    """Remove an earlier evaluation's results (checked by claim_out_dir), so none is left beside the new."""
    for name in EVAL_OUTPUTS:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
