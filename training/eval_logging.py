"""Rollout metrics to W&B, for both the evaluation (training/evaluate.py) and the training callback
(training/rollout_callback.py): the numbers are rollouts.report.scalar_metrics, the media are here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rollouts.report import scalar_metrics
from training.checkpoint import run_dir_of


def wandb_media(metrics: dict[str, Any], chart: str | os.PathLike | None = None,
                prefix: str = "eval") -> dict[str, Any]:
    """W&B objects: the first video, all videos, the bar chart, the per-task table ({} when none applies)."""
    import wandb

    media: dict[str, Any] = {}
    videos = metrics.get("video_paths", [])
    if videos:
        media[f"{prefix}/video"] = wandb.Video(videos[0], format="mp4", caption=Path(videos[0]).stem)
        if len(videos) > 1:
            media[f"{prefix}/videos"] = [wandb.Video(v, format="mp4", caption=Path(v).stem) for v in videos]
    if chart is not None:
        media[f"{prefix}/success_per_task"] = wandb.Image(str(chart))
    if len(metrics["per_task"]) > 1:
        rows = [[n, s["success_rate"], *s["success_ci95"], s["n_episodes"]]
                for n, s in metrics["per_task"].items()]
        columns = ["task", "success_rate", "ci95_low", "ci95_high", "episodes"]
        media[f"{prefix}/per_task"] = wandb.Table(columns=columns, data=rows)
    return media


def log_evaluation(logger_cfg: dict[str, Any], eval_cfg: dict[str, Any], ckpt: dict[str, Any],
                   ckpt_path: Path, metrics: dict[str, Any], chart: Path | None) -> None:
    """Into the training run when the checkpoint names one (resumed), else a new run of the project.
    WANDB_MODE in the environment wins over logger.mode."""
    import wandb

    run_id = ckpt.get("wandb_run_id")
    kwargs: dict[str, Any] = dict(project=logger_cfg["project"], entity=logger_cfg["entity"], job_type="eval",
                                  mode=os.environ.get("WANDB_MODE", logger_cfg["mode"]),
                                  dir=str(run_dir_of(ckpt_path)))
    if run_id:
        kwargs.update(id=run_id, resume="allow")
    else:
        kwargs.update(config={"eval": eval_cfg, "checkpoint": str(ckpt_path)})
    run = wandb.init(**kwargs)
    try:
        payload = {**scalar_metrics(metrics), **wandb_media(metrics, chart)}
        if ckpt.get("global_step") is not None:  # the training runs' x-axis
            payload["trainer/global_step"] = int(ckpt["global_step"])
        run.log(payload)
        run.summary["eval/success_rate"] = metrics["success_rate"]
    finally:
        run.finish()
