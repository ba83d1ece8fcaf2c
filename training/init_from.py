"""Fine-tuning: start a new run from another run's weights (`init_from=`), with `reinit=` and `freeze=`.

    report = load_pretrained(policy, cfg)        # copies every tensor whose name and shape match
    frozen = freeze(policy, cfg["freeze"])       # requires_grad=False: out of the optimiser
    write_report(report, run_dir)                # <run dir>/init_from_report.json (+ a summary in the log)

What is copied comes from the checkpoint's `policy` entry (the evaluated, EMA weights), never its optimiser,
schedule or step: fine-tuning is a new run. The normaliser and the instruction table always come from this
run's data (the new store's statistics replace the pretrained ones), so they are never copied.

Patterns (`reinit=`, `freeze=`) match parameter names such as `net.head.weight`: a shell-style glob
(`*router*`), or a name prefix that ends at a dot boundary (`net.head` matches `net.head.weight` and
`net.head.bias`, not `net.header.x`). A pattern that matches nothing is an error: a typo must not pass.
"""

from __future__ import annotations

import fnmatch
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from policies.base import CheckpointError
from training import checkpoint
from training.config_check import ConfigError

log = logging.getLogger("train")

REPORT_NAME = "init_from_report.json"
# Tensors that describe this run's data, not learned weights: always this run's own.
FROM_THIS_RUNS_DATA = ("normalizer.*", "*lang_table")


def matches(name: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern) or name.startswith(pattern.rstrip(".") + ".") or name == pattern


def matching(names: Iterable[str], patterns: Sequence[str]) -> list[str]:
    return [n for n in names if any(matches(n, p) for p in patterns)]


def check_patterns(names: Sequence[str], patterns: Sequence[str], key: str) -> None:
    """One line for a pattern that matches no tensor of this policy (a typo would otherwise pass silently)."""
    for p in patterns:
        if not isinstance(p, str) or not p:
            raise ConfigError(f"{key}: each entry must be a non-empty name pattern, got {p!r}")
        if not matching(names, [p]):
            raise ConfigError(f"{key}: pattern {p!r} matches no parameter of this policy; names look like "
                              f"{', '.join(list(names)[:4])}, ...")


def check_finetune_config(cfg: dict[str, Any]) -> None:
    """The fine-tuning keys' own values (before anything is read or built)."""
    for key in ("reinit", "freeze"):
        if not isinstance(cfg.get(key), list):
            raise ConfigError(f"{key} must be a list of name patterns, e.g. {key}=[net.head], got {cfg.get(key)!r}")
    mult = cfg["optim"].get("new_param_lr_mult")
    if isinstance(mult, bool) or not isinstance(mult, (int, float)) or not mult > 0:
        raise ConfigError(f"optim.new_param_lr_mult must be a number > 0, got {mult!r}")
    if cfg["reinit"] and not cfg.get("init_from"):
        raise ConfigError("reinit= only means something with init_from=CKPT (a run directory or a .ckpt file)")


def check_before_build(cfg: dict[str, Any]) -> None:
    """Config values, and the init_from checkpoint's kind, checked before any data is generated or read."""
    check_finetune_config(cfg)
    if cfg.get("init_from"):
        read_pretrained(cfg["init_from"], cfg["policy"]["name"])


def read_pretrained(spec: str, policy_name: str) -> tuple[Path, dict[str, Any]]:
    """The checkpoint file behind `init_from` and its `policy` entry; one line if it is another policy."""
    path = checkpoint.resolve_checkpoint(spec)
    meta = checkpoint.read_checkpoint(path)["policy"]
    if meta.get("name") != policy_name:
        raise CheckpointError(f"init_from: {path} holds a {meta.get('name')!r} policy but this run builds "
                              f"policy={policy_name}; fine-tune with policy={meta.get('name')} or pick a "
                              f"{policy_name} checkpoint")
    if not isinstance(meta.get("state_dict"), dict):
        raise CheckpointError(f"init_from: {path} has no policy weights (state_dict); use a .ckpt of train.py")
    return path, meta


def load_report(model: dict[str, torch.Tensor], pretrained: dict[str, torch.Tensor],
                reinit: Sequence[str]) -> dict[str, Any]:
    """Sort every tensor name into what loading does with it (nothing is changed here)."""
    own_data = set(matching(model, FROM_THIS_RUNS_DATA))
    reinit_names = set(matching(model, reinit))
    report: dict[str, Any] = {"copied": [], "new": [], "reinitialised": [], "mismatched": {},
                              "mismatched_reinitialised": {}, "from_this_runs_data": sorted(own_data),
                              "unused": []}
    for name, tensor in model.items():
        if name in own_data:
            continue
        differs = name in pretrained and tuple(pretrained[name].shape) != tuple(tensor.shape)
        shapes = {"checkpoint": list(pretrained[name].shape), "this_run": list(tensor.shape)} if differs else None
        if name in reinit_names:
            report["reinitialised"].append(name)
            if differs:  # a mismatch that reinit covers: listed, and no error
                report["mismatched_reinitialised"][name] = shapes
        elif name not in pretrained:
            report["new"].append(name)
        elif differs:
            report["mismatched"][name] = shapes
        else:
            report["copied"].append(name)
    report["unused"] = sorted(n for n in pretrained if n not in model and not matching([n], FROM_THIS_RUNS_DATA))
    return report


def load_pretrained(policy: nn.Module, cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Copy the matching tensors of cfg['init_from'] into `policy`; write and log the load report. A shape
    mismatch that `reinit` does not cover stops the run in one line pointing at the report."""
    path, meta = read_pretrained(cfg["init_from"], cfg["policy"]["name"])
    own = policy.state_dict()
    check_patterns(list(own), cfg["reinit"], "reinit")
    report = load_report(own, meta["state_dict"], cfg["reinit"])
    report["checkpoint"] = str(path)
    report_path = write_report(report, run_dir)
    if report["mismatched"]:
        names = list(report["mismatched"])
        raise CheckpointError(f"init_from: {len(names)} tensor(s) differ in shape from {path} ({', '.join(names)}); "
                              f"see {report_path}; re-initialise them with reinit=[...] or fix the config")
    with torch.no_grad():
        for name in report["copied"]:
            own[name].copy_(meta["state_dict"][name])
    log.info("init_from %s: %s", path, summary(report))
    return report


def write_report(report: dict[str, Any], run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / REPORT_NAME
    path.write_text(json.dumps(report, indent=1) + "\n")
    return path


def summary(report: dict[str, Any]) -> str:
    def few(names: Sequence[str]) -> str:
        return "" if not names else " (" + ", ".join(list(names)[:6]) + (", ..." if len(names) > 6 else "") + ")"

    return (f"{len(report['copied'])} copied, {len(report['new'])} new{few(report['new'])}, "
            f"{len(report['reinitialised'])} re-initialised{few(report['reinitialised'])}, "
            f"{len(report['mismatched'])} shape-mismatched{few(list(report['mismatched']))}, "
            f"{len(report['unused'])} unused{few(report['unused'])}; normaliser and instructions from this "
            f"run's data")


def freeze(policy: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Take the matching parameters out of training (requires_grad=False, so out of the optimiser)."""
    names = [n for n, _ in policy.named_parameters()]
    check_patterns(names, patterns, "freeze")
    frozen = matching(names, patterns)
    params = dict(policy.named_parameters())
    for n in frozen:
        params[n].requires_grad_(False)
    if frozen:
        log.info("frozen: %d parameter tensors (%s)", len(frozen), ", ".join(frozen[:6]) + (", ..." if len(frozen) > 6
                                                                                          else ""))
    return frozen


def prepare_finetuning(module: Any, cfg: dict[str, Any], run_dir: Path) -> None:
    """What `init_from`, `reinit` and `freeze` do to a freshly built PolicyModule, before training starts.
    On resume the same weights are loaded again (then overwritten by the run's own checkpoint) so the
    parameter groups, and with them the saved optimiser state, line up; the report is not rewritten."""
    policy = module.policy
    if cfg.get("init_from"):
        if cfg.get("resume"):
            _, meta = read_pretrained(cfg["init_from"], cfg["policy"]["name"])
            report = load_report(policy.state_dict(), meta["state_dict"], cfg["reinit"])
        else:
            report = load_pretrained(policy, cfg, run_dir)
        module.new_param_names = frozenset(report["new"] + report["reinitialised"])
        if module.ema is not None:  # the EMA starts from the loaded weights, not the random ones
            module.ema.model.load_state_dict(policy.state_dict())
    freeze(policy, cfg["freeze"])
