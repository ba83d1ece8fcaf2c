"""Evaluating a trained policy by simulated rollouts: what `python eval_rollouts.py` runs.

    info = evaluate(load_config(["checkpoint=latest", "n_episodes=10"]))   # conf/eval.yaml + overrides

The checkpoint alone rebuilds the policy (with its normalizer) and the environments (the env specs
saved from the dataset). Writes to <run dir>/eval/<timestamp>/ (or out=DIR):
    eval_info.json             per-episode records + success rate with a Wilson 95% interval
    videos/epNNNN_<task>_<success|failure|error>.mp4
    success_per_task.png       with several tasks
and logs eval/success_rate, per-task rates and eval/video to W&B (offline unless WANDB_MODE says).
Every input is checked before the first rollout; a problem the user can fix is one EvalError line.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from rollouts.options import RolloutOptions
from training import checkpoint
from training.config_check import ConfigError
from training.eval_config_check import check_eval_against_policy, check_eval_config, claim_out_dir, empty_out_dir
from training.eval_store import policy_for_store, restrict_to_store

EXIT_EPISODE_ERRORS = 3  # the evaluation ran, but episodes errored (allow_errors=true accepts that)

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


class EvalError(RuntimeError):
    """A problem the user can fix (bad checkpoint, missing simulator, bad option): one clear message."""


class EvalConfigError(EvalError, ConfigError):
    """A bad value of conf/eval.yaml (training/eval_config_check.py): exit code 2."""


@contextmanager
def _config_errors() -> Iterator[None]:
    try:
        yield
    except ConfigError as err:
        raise EvalConfigError(str(err)) from None


class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an interruption so that the runner closes its workers on the way out."""


def load_config(overrides: list[str] | None = None) -> DictConfig:
    """conf/eval.yaml with command-line style overrides, for notebooks and tests."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="eval", overrides=list(overrides or []))


def evaluate(cfg: DictConfig | dict[str, Any], command: str | None = None) -> dict[str, Any]:
    """Run the evaluation `cfg` (conf/eval.yaml) describes; returns the eval_info dict (+ out_dir)."""
    from rollouts.runner import EnvBuildError, run

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    with _config_errors():
        check_eval_config(cfg)  # every value, before the checkpoint is read
    try:
        options = RolloutOptions.from_config(cfg, device=None)
    except (TypeError, ValueError) as err:
        raise EvalError(str(err)) from None
    ckpt_path, ckpt, tasks = _checkpoint(cfg)
    device = pick_device(cfg["device"])
    if cfg.get("server"):
        policy = _remote_policy(cfg, ckpt, ckpt_path)
    else:
        policy = policy_for_store(_build_policy(ckpt, ckpt_path, device), ckpt)
    if cfg["precision"] != "fp32" and not cfg.get("server"):
        from policies.quantize import quantize_policy

        try:
            policy = quantize_policy(policy, cfg["precision"])
        except ValueError as err:
            raise EvalError(str(err)) from None
    out = Path(cfg["out"] or checkpoint.run_dir_of(ckpt_path) / "eval" / time.strftime("%Y-%m-%d_%H-%M-%S"))
    with _config_errors():
        check_eval_against_policy(cfg, policy, tasks)
        replace = claim_out_dir(out, cfg["overwrite"])
    demo_seeds = ckpt["dataset"].get("demo_seeds")
    try:
        options.episode_seeds(demo_seeds)  # here, not after the workers have started
    except ValueError as err:
        raise EvalError(str(err)) from None
    if replace:
        empty_out_dir(out)  # the earlier results go whole: none is left beside the new ones
    options = options.replace(device=str(device), video={"dir": _writable(out, options.video.n)})
    try:
        metrics = run(policy, tasks, options, demo_seeds=demo_seeds)
    except EnvBuildError as err:
        raise EvalError(str(err)) from None
    info = _report(cfg, command, metrics, ckpt, ckpt_path, policy.name, tasks, out)
    return {**info, "out_dir": str(out)}


def run_cli(cfg: DictConfig, command: str) -> int:
    """`evaluate` for the command line, as an exit code: 2 after a bad config value, 1 after another user
    error (one line on stderr each), 3 when episodes errored (unless allow_errors=true), 130 / 143 after
    Ctrl-C / SIGTERM (the worker processes are closed first, quietly)."""
    def terminated(signum: int, frame: Any) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        info = evaluate(cfg, command=command)
    except EvalConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except EvalError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        print("\ninterrupted: the evaluation stopped before writing eval_info.json", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(err, _Terminated) else signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)
    n_errors, n = info["aggregate"]["n_errors"], info["aggregate"]["n_episodes"]
    if n_errors and not cfg.get("allow_errors"):
        print(f"error: {n_errors} of {n} episodes errored (not failures: no score for them; see 'error' in "
              f"{info['out_dir']}/eval_info.json); fix the cause, or pass allow_errors=true", file=sys.stderr)
        return EXIT_EPISODE_ERRORS
    return 0


def pick_device(spec: str) -> torch.device:
    """`auto`: cuda when available, else cpu; otherwise the device named."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(spec)
    except RuntimeError as err:
        raise EvalError(f"device={spec!r} is not a device ({err}); use auto, cpu or cuda[:N]") from None


# --- the steps ------------------------------------------------------------------------------
def _checkpoint(cfg: dict[str, Any]) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
    """The checkpoint's path, its data, and its tasks (whose envs can be built here)."""
    if not cfg["checkpoint"]:
        raise EvalError("say which policy to evaluate: checkpoint=PATH (a .ckpt file or a run directory) "
                        "or checkpoint=latest")
    try:
        path = checkpoint.resolve_checkpoint(cfg["checkpoint"], cfg["outputs_dir"])
        if cfg["checkpoint"] == "latest":
            print(f"checkpoint=latest -> {path}")
        ckpt = restrict_to_store(checkpoint.read_checkpoint(path), cfg.get("store"), path)  # a mixture's store
        tasks = checkpoint.check_evaluable(ckpt, path, own_factory=cfg["env_factory"] is not None)
    except checkpoint.CheckpointError as err:
        raise EvalError(str(err)) from None
    return path, ckpt, tasks


def _build_policy(ckpt: dict[str, Any], path: Path, device: torch.device):
    from policies.base import Policy

    try:
        policy = Policy.from_checkpoint_dict(ckpt["policy"], str(path))
    except (ValueError, KeyError, RuntimeError) as err:  # CheckpointError is a ValueError
        raise EvalError(f"cannot rebuild the policy from {path}: {err}") from None
    return policy.to(device).eval()


def _remote_policy(cfg: dict[str, Any], ckpt: dict[str, Any], path: Path):
    """The policy server at cfg['server'], checked to serve this very checkpoint (same model hash)."""
    from robot_client.client import ServerError, ServerUnavailable
    from serving.model import model_hash
    from serving.remote_policy import RemotePolicy

    try:
        policy = RemotePolicy(cfg["server"], cfg.get("token"))
    except (ServerError, ServerUnavailable, OSError, ValueError) as err:
        raise EvalError(f"server={cfg['server']}: {err}") from None
    if policy.model_hash != model_hash(ckpt["policy"]["state_dict"]):
        raise EvalError(f"the server at {cfg['server']} serves another model (hash {policy.model_hash}) than "
                        f"{path}; start it with this checkpoint")
    return policy


def _writable(out: Path, n_videos: int) -> Path | None:
    """Both checked before any rollout: a long evaluation must not end in an unwritable directory."""
    from rollouts.video import VideoDirError, check_writable_dir

    try:
        check_writable_dir(out)
        return check_writable_dir(out / "videos") if n_videos > 0 else None
    except VideoDirError as err:
        raise EvalError(str(err)) from None


def _report(cfg: dict[str, Any], command: str | None, metrics: dict[str, Any], ckpt: dict[str, Any],
            ckpt_path: Path, policy_name: str, tasks: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    """eval_info.json, the chart, the table on the console, and W&B."""
    from rollouts.report import eval_info, print_table, success_bar_chart, write_eval_info

    dataset = ckpt["dataset"]
    info = eval_info(
        metrics, checkpoint=str(ckpt_path), run_dir=str(checkpoint.run_dir_of(ckpt_path)), policy=policy_name,
        global_step=ckpt.get("global_step"), epoch=ckpt.get("epoch"), dataset=dataset.get("path"),
        tasks=[{"name": t["name"], "instruction": t.get("instruction", "")} for t in tasks],
        command=command, config=cfg, created=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    write_eval_info(out / "eval_info.json", info)
    chart = success_bar_chart(metrics, out / "success_per_task.png") if len(tasks) > 1 else None
    print_table(metrics, title=f"{policy_name} on {', '.join(t['name'] for t in tasks[:4])}"
                f"{' ...' if len(tasks) > 4 else ''}")
    print(f"results in {out}")
    if cfg["logger"]["type"] == "wandb":  # other logger types: eval_info.json is the record
        from training.eval_logging import log_evaluation

        log_evaluation(cfg["logger"], cfg, ckpt, ckpt_path, metrics, chart)
    return info
