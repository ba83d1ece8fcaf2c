"""Experiment loggers of a training run: W&B (offline by default), CSV, or none."""

from __future__ import annotations

import glob
import os
import subprocess
from pathlib import Path
from typing import Any


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def build_logger(cfg: dict[str, Any], run_dir: Path, run_id: str | None, resume_step: int | None = None):
    """The configured logger; a resumed run continues the same history (the W&B run id, the CSV rows)."""
    kind = cfg["logger"]["type"]
    if kind == "none":
        return False
    if kind == "csv":
        return resumable_csv_logger(run_dir, resume_step)
    if kind != "wandb":
        raise ValueError(f"unknown logger type {kind!r}; choose logger=wandb|csv|none")
    from lightning.pytorch.loggers import WandbLogger

    lcfg = cfg["logger"]
    # WANDB_MODE in the environment wins over the config (the usual W&B convention).
    mode = os.environ.get("WANDB_MODE", lcfg["mode"])
    tags = [cfg["policy"]["name"], cfg["task"]["name"], *lcfg.get("tags", [])]
    return WandbLogger(project=lcfg["project"], entity=lcfg["entity"], save_dir=str(run_dir),
                       offline=mode == "offline", mode=mode, id=run_id, resume="allow" if run_id else None,
                       tags=tags, config={**cfg, "git_commit": git_commit()})


def wandb_run_id(logger) -> str | None:
    """The W&B run id to record in checkpoints (so a resumed run continues the same W&B run)."""
    from lightning.pytorch.loggers import WandbLogger

    return logger.version if isinstance(logger, WandbLogger) else None


def wandb_sync_hint(run_dir: Path) -> str | None:
    runs = sorted(glob.glob(str(run_dir / "wandb" / "offline-run-*")))
    return f"wandb sync {runs[-1]}" if runs else None


def resumable_csv_logger(run_dir: Path, resume_step: int | None):
    """Lightning's CSVLogger deletes an existing metrics.csv when it starts; on resume this one keeps the
    rows up to the resumed step (later rows were logged after the checkpoint and are logged again)."""
    import csv

    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    class KeepingWriter(ExperimentWriter):
        def _check_log_dir_exists(self) -> None:
            if resume_step is None or not os.path.isfile(self.metrics_file_path):
                return super()._check_log_dir_exists()
            with open(self.metrics_file_path, newline="") as f:
                reader = csv.DictReader(f)
                keys = list(reader.fieldnames or [])
                rows = [r for r in reader if r.get("step", "") != "" and int(float(r["step"])) <= resume_step]
            tmp = self.metrics_file_path + ".tmp"
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=keys)
                writer.writeheader()
                writer.writerows(rows)
            os.replace(tmp, self.metrics_file_path)
            self.metrics_keys = sorted(keys)

    class ResumableCSVLogger(CSVLogger):
        @property
        def experiment(self) -> ExperimentWriter:
            if self._experiment is None:
                self._fs.makedirs(self.root_dir, exist_ok=True)
                self._experiment = KeepingWriter(log_dir=self.log_dir)
            return self._experiment

    return ResumableCSVLogger(save_dir=str(run_dir), name="csv", version="")
