"""Evaluate a trained policy by simulated rollouts (see conf/eval.yaml for every knob):

    python eval_rollouts.py checkpoint=PATH n_episodes=50 workers=2 video.n=4
    python eval_rollouts.py checkpoint=latest            # newest outputs/*/*/checkpoints/last.ckpt

The checkpoint alone rebuilds the policy (with its normalizer) and the environments (the env specs
saved from the dataset). Writes to <run dir>/eval/<timestamp>/ (or out=DIR):
    eval_info.json             per-episode records + success rate with a Wilson 95% interval
    videos/epNNNN_<task>_<success|failure|error>.mp4
    success_per_task.png       with several tasks
and logs eval/success_rate, per-task rates and eval/video to W&B (offline unless WANDB_MODE says).
Thin by design: rollouts live in rollouts/runner.py, the report in rollouts/report.py.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parent / "conf"


class EvalError(RuntimeError):
    """A problem the user can fix (bad checkpoint, missing simulator, bad option): one clear message."""


# --- inputs ---------------------------------------------------------------------------------
def resolve_checkpoint(spec: str | None, outputs_dir: str = "outputs") -> Path:
    """A .ckpt path from a file, a run directory, or `latest`."""
    if not spec:
        raise EvalError("say which policy to evaluate: checkpoint=PATH (a .ckpt file or a run directory) "
                        "or checkpoint=latest")
    if spec == "latest":
        found = glob.glob(os.path.join(outputs_dir, "*", "*", "checkpoints", "last.ckpt"))
        if not found:
            raise EvalError(f"checkpoint=latest: no {outputs_dir}/*/*/checkpoints/last.ckpt here; "
                            "train first (python train.py) or pass checkpoint=PATH")
        path = Path(max(found, key=os.path.getmtime))
        print(f"checkpoint=latest -> {path}")
        return path
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "checkpoints" / "last.ckpt").is_file():
            raise EvalError(f"{path} is a directory without checkpoints/last.ckpt; pass a run directory of "
                            "train.py or a .ckpt file")
        return path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise EvalError(f"checkpoint {str(path)!r} does not exist")
    return path


def run_dir_of(ckpt_path: Path) -> Path:
    return ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's plain data (nothing unpickled), checked for what evaluation needs."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise EvalError(f"{path} is not a readable checkpoint ({type(err).__name__}: {err}); it may be "
                        "truncated or not a PyTorch file") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("policy"), dict):
        raise EvalError(f"{path} is not a checkpoint of this framework (no 'policy' entry); evaluate a "
                        "checkpoint written by train.py")
    tasks = (ckpt.get("dataset") or {}).get("tasks")
    if not tasks or any(not t.get("env_spec") for t in tasks):
        raise EvalError(f"{path} holds no task list with env specs, so its environments cannot be rebuilt; "
                        "evaluate a training checkpoint (<run dir>/checkpoints/*.ckpt)")
    return ckpt


def check_env_specs(tasks: list[dict[str, Any]]) -> None:
    """Fail before any rollout when a task's env cannot be built here (bad spec, simulator missing)."""
    from envs.spec import EnvSpec

    for t in tasks:
        try:
            spec = EnvSpec.from_dict(t["env_spec"])
        except (TypeError, ValueError) as err:
            raise EvalError(f"task {t['name']!r}: the checkpoint's env spec is not valid here: {err}") \
                from None
        if importlib.util.find_spec(spec.simulator) is None:
            raise EvalError(f"task {t['name']!r} runs in {spec.simulator}, which is not installed; install "
                            "the project with its simulators (make install) and evaluate again")


def build_policy(path: Path, device: torch.device):
    from policies.base import Policy

    try:
        policy = Policy.from_checkpoint(path, map_location=str(device))
    except (ValueError, KeyError, RuntimeError) as err:
        raise EvalError(f"cannot rebuild the policy from {path}: {err}") from None
    return policy.to(device).eval()


# --- the evaluation -------------------------------------------------------------------------
def evaluate(cfg: DictConfig | dict[str, Any], command: str | None = None) -> dict[str, Any]:
    """Run the evaluation `cfg` (conf/eval.yaml) describes; returns the eval_info dict (+ out_dir)."""
    from rollouts.report import eval_info, print_table, success_bar_chart, write_eval_info
    from rollouts.runner import EnvBuildError, episode_seeds, run
    from rollouts.video import VideoDirError, check_writable_dir

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    if int(cfg["n_episodes"]) <= 0:
        raise EvalError(f"n_episodes must be positive, got {cfg['n_episodes']}")
    if int(cfg["workers"]) < 1 or int(cfg["video"]["n"]) < 0:
        raise EvalError(f"need workers >= 1 and video.n >= 0, got {cfg['workers']} and {cfg['video']['n']}")
    ckpt_path = resolve_checkpoint(cfg["checkpoint"], cfg["outputs_dir"])
    ckpt = load_checkpoint(ckpt_path)
    dataset = ckpt["dataset"]
    tasks = list(dataset["tasks"])
    if cfg["env_factory"] is None:
        check_env_specs(tasks)
    device = torch.device("cuda" if cfg["device"] == "auto" and torch.cuda.is_available()
                          else "cpu" if cfg["device"] == "auto" else cfg["device"])
    policy = build_policy(ckpt_path, device)
    out = Path(cfg["out"] or run_dir_of(ckpt_path) / "eval" / time.strftime("%Y-%m-%d_%H-%M-%S"))
    try:  # both checked before any rollout: a long evaluation must not end in an unwritable directory
        check_writable_dir(out)
        video_dir = check_writable_dir(out / "videos") if cfg["video"]["n"] > 0 else None
    except VideoDirError as err:
        raise EvalError(str(err)) from None

    if cfg["max_steps"] is not None and int(cfg["max_steps"]) <= 0:
        raise EvalError(f"max_steps must be positive (or null: each task's horizon), got {cfg['max_steps']}")
    try:
        seeds = episode_seeds(int(cfg["n_episodes"]), cfg["seeds"], dataset.get("demo_seeds"),
                              int(cfg["seed_offset"]))
    except ValueError as err:
        raise EvalError(str(err)) from None

    torch.manual_seed(int(cfg["sample_seed"]))
    try:
        metrics = run(
            policy, tasks, int(cfg["n_episodes"]), workers=int(cfg["workers"]),
            env_factory=cfg["env_factory"], reply_timeout_s=float(cfg["worker_timeout_s"]),
            seeds=seeds, max_steps=cfg["max_steps"], stop_on_success=bool(cfg["stop_on_success"]),
            video_n=int(cfg["video"]["n"]), video_dir=video_dir, video_fps=float(cfg["video"]["fps"]),
            video_source=cfg["video"]["source"], video_render_kwargs=cfg["video"]["render_kwargs"],
            device=device, progress=bool(cfg["progress"]),
        )
    except EnvBuildError as err:
        raise EvalError(str(err)) from None

    info = eval_info(
        metrics, checkpoint=str(ckpt_path), run_dir=str(run_dir_of(ckpt_path)), policy=policy.name,
        global_step=ckpt.get("global_step"), epoch=ckpt.get("epoch"), dataset=dataset.get("path"),
        tasks=[{"name": t["name"], "instruction": t.get("instruction", "")} for t in tasks],
        command=command, config=cfg, created=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    write_eval_info(out / "eval_info.json", info)
    chart = success_bar_chart(metrics, out / "success_per_task.png") if len(tasks) > 1 else None
    print_table(metrics, title=f"{policy.name} on {', '.join(t['name'] for t in tasks[:4])}"
                f"{' ...' if len(tasks) > 4 else ''}")
    print(f"results in {out}")
    if cfg["logger"]["type"] == "wandb":  # other logger types: eval_info.json is the record
        log_wandb(cfg, ckpt, ckpt_path, metrics, chart)
    return {**info, "out_dir": str(out)}


def log_wandb(cfg: dict[str, Any], ckpt: dict[str, Any], ckpt_path: Path, metrics: dict[str, Any],
              chart: Path | None) -> None:
    """Into the training run when the checkpoint names one (resumed), else a new run of the project."""
    import wandb

    from rollouts.report import scalar_metrics, wandb_media

    w = cfg["logger"]
    run_id = ckpt.get("wandb_run_id")
    kwargs: dict[str, Any] = dict(project=w["project"], entity=w["entity"], job_type="eval",
                                  mode=os.environ.get("WANDB_MODE", w["mode"]),
                                  dir=str(run_dir_of(ckpt_path)))
    if run_id:
        kwargs.update(id=run_id, resume="allow")
    else:
        kwargs.update(config={"eval": cfg, "checkpoint": str(ckpt_path)})
    run = wandb.init(**kwargs)
    try:
        payload = {**scalar_metrics(metrics), **wandb_media(metrics, chart)}
        if ckpt.get("global_step") is not None:  # the training runs' x-axis
            payload["trainer/global_step"] = int(ckpt["global_step"])
        run.log(payload)
        run.summary["eval/success_rate"] = metrics["success_rate"]
    finally:
        run.finish()


def load_config(overrides: list[str] | None = None) -> DictConfig:
    """conf/eval.yaml with command-line style overrides, for notebooks and tests."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="eval", overrides=list(overrides or []))


@hydra.main(config_path="conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg, command=shlex.join(["python", *sys.argv]))
    except EvalError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
