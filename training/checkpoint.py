"""The one owner of training checkpoints: where they are, reading them, and whether they fit a use.

    path = resolve_checkpoint("latest")          # a .ckpt file | a run directory | latest
    ckpt = read_checkpoint(path)                 # plain data (weights_only=True), format checked
    check_resumable(ckpt, path, cfg)             # resume: same policy, same policy config
    check_evaluable(ckpt, path)                  # evaluation: tasks whose env specs rebuild here

A run directory is what train.py writes: <run dir>/checkpoints/{last.ckpt, stepNNNNNN.ckpt}. Writing them
is training/checkpoint_io.py (checked, atomic); who may write into a run directory, training/run_dir.py.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from pathlib import Path
from typing import Any

from policies.base import CheckpointError, read_checkpoint_file

__all__ = ["CheckpointError", "resolve_checkpoint", "read_checkpoint", "run_dir_of", "check_resumable",
           "check_evaluable", "policy_config", "LAST"]

LAST = Path("checkpoints") / "last.ckpt"  # inside a run directory
POLICY_ONLY_KEYS = ("name",)  # cfg["policy"] keys that are not part of the policy's own config


def resolve_checkpoint(spec: str | os.PathLike | None, outputs_dir: str | os.PathLike = "outputs") -> Path:
    """A .ckpt path from a file, a run directory (its checkpoints/last.ckpt), or `latest` (the newest
    <outputs_dir>/*/*/checkpoints/last.ckpt)."""
    if spec is None or str(spec) == "":
        raise CheckpointError("say which checkpoint: a .ckpt file, a run directory, or latest")
    if str(spec) == "latest":
        found = glob.glob(os.path.join(os.fspath(outputs_dir), "*", "*", str(LAST)))
        if not found:
            raise CheckpointError(f"latest: no {outputs_dir}/*/*/{LAST} here; train first (python train.py) "
                                  "or pass a .ckpt file or a run directory")
        return Path(max(found, key=os.path.getmtime))
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / LAST).is_file():
            raise CheckpointError(f"{path} is a directory without {LAST}; pass a run directory of train.py "
                                  "or a .ckpt file")
        return path / LAST
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    return path


def run_dir_of(ckpt_path: str | os.PathLike) -> Path:
    p = Path(ckpt_path)
    return p.parent.parent if p.parent.name == "checkpoints" else p.parent


def read_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> dict[str, Any]:
    """The checkpoint's plain data; a CheckpointError (one line) for anything else."""
    return read_checkpoint_file(path, map_location)


def policy_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The policy's own config out of a resolved run config (what checkpoints store)."""
    return {k: v for k, v in cfg["policy"].items() if k not in POLICY_ONLY_KEYS}


def check_resumable(ckpt: dict[str, Any], path: str | os.PathLike, cfg: dict[str, Any]) -> None:
    """Refuse, before anything is written, a checkpoint of another policy or another policy config."""
    if "optimizer_states" not in ckpt or "global_step" not in ckpt:
        raise CheckpointError(f"resume: {path} holds a policy but no training state (optimizer, step); "
                              "resume from <run dir>/checkpoints/last.ckpt")
    meta = ckpt["policy"]
    if meta["name"] != cfg["policy"]["name"]:
        raise CheckpointError(f"resume: {path} holds a {meta['name']!r} policy but this run asks for "
                              f"policy={cfg['policy']['name']}; pass the same policy")
    # Compare resolved configs: automatic values (the DiT's mlp_hidden=0) are stored resolved.
    import policies  # noqa: F401  (registers every policy)
    from policies.base import POLICY_REGISTRY

    config_cls = POLICY_REGISTRY[meta["name"]].config_cls
    try:
        want = config_cls.from_dict(policy_config(cfg), policy=meta["name"]).to_dict()
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"resume: the run's policy config is not valid: {err}") from None
    have = config_cls.from_dict(meta["config"], policy=meta["name"]).to_dict()
    diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
    if diff:
        raise CheckpointError(f"resume: the policy config differs from the checkpoint's in {diff}; resume "
                              "with the run's own config (see <run dir>/config.yaml)")


def check_evaluable(ckpt: dict[str, Any], path: str | os.PathLike, own_factory: bool = False) -> list[dict[str, Any]]:
    """The checkpoint's tasks, after checking each env can be rebuilt here (spec valid, simulator installed).
    With `own_factory` (a user-supplied env factory reads the specs) only their presence is checked."""
    from envs.spec import EnvSpec

    tasks = (ckpt.get("dataset") or {}).get("tasks")
    if not tasks:
        raise CheckpointError(f"{path} holds no task list, so its environments cannot be rebuilt; evaluate a "
                              "training checkpoint (<run dir>/checkpoints/*.ckpt)")
    for t in tasks:
        if not t.get("env_spec"):
            raise CheckpointError(f"task {t['name']!r} of {path} has no env spec (its dataset names no simulator "
                                  "we have), so it cannot be evaluated by rollouts here")
        if own_factory:
            continue
        try:
            spec = EnvSpec.from_dict(t["env_spec"])
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"task {t['name']!r}: the checkpoint's env spec is not valid here: {err}") \
                from None
        if spec.simulator == "libero":  # runs under its own interpreter (envs/libero_process.py), not importable here
            from envs.libero_process import LiberoUnavailable, libero_python

            try:
                libero_python()
            except LiberoUnavailable as err:
                raise CheckpointError(f"task {t['name']!r}: {err}") from None
        elif importlib.util.find_spec(spec.simulator) is None:
            raise CheckpointError(f"task {t['name']!r} runs in {spec.simulator}, which is not installed; install "
                                  "the project with its simulators (make install) and evaluate again")
    return list(tasks)
