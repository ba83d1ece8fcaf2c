"""A training run from a resolved config: `train(cfg, run_dir)` (what `python train.py` does).

Order matters for a user's data: the config and the checkpoint to resume are checked, and the
dataset is validated, before anything is generated, built or written.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import OmegaConf

from envs.threads import use_threads
from training import checkpoint, demos, init_from, loggers, wiring
from training import run_dir as run_dirs
from training.config_check import check_train_config
from training.mixture_data import build_mixture_data
from training.store_check import check_against_store

log = logging.getLogger("train")

# Warnings a user can do nothing about: Lightning calling a torch API torch has deprecated, and
# Lightning noting that a resumed run's checkpoint directory is not empty (that is the point of resuming).
KNOWN_WARNINGS = (r".*isinstance\(treespec, LeafSpec\).*", r"Checkpoint directory .* exists and is not empty")


def _not_an_advert(record: logging.LogRecord) -> bool:
    return "litlogger" not in record.getMessage()  # Lightning's tip to install its cloud logger


def quiet_known_warnings() -> None:
    for pattern in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if _not_an_advert not in logger.filters:
            logger.addFilter(_not_an_advert)


class Interrupted(SystemExit):
    """Training stopped by Ctrl-C or SIGTERM after saving last.ckpt; the exit code says so."""


def rollout_callbacks(cfg: dict[str, Any], info: dict[str, Any]) -> list:
    r = cfg["rollout_eval"]
    if not r["every_n_steps"]:
        return []
    from training.rollout_callback import RolloutEvalCallback

    return [RolloutEvalCallback.from_config(r, info["tasks"], info["demo_seeds"])]


def train(cfg: dict[str, Any], run_dir: Path, command: str = "") -> Path:
    """Train as `cfg` says; returns the run directory (checkpoints/, config.yaml, logs)."""
    check_train_config(cfg)
    init_from.check_before_build(cfg)
    quiet_known_warnings()
    ckpt_path, run_id, resume_step, changes = None, None, None, {}
    if cfg["resume"]:
        ckpt_path = checkpoint.resolve_checkpoint(cfg["resume"])
        ckpt = checkpoint.read_checkpoint(ckpt_path)
        checkpoint.check_resumable(ckpt, ckpt_path, cfg)
        run_id, resume_step = ckpt.get("wandb_run_id"), int(ckpt["global_step"])
        run_dir = checkpoint.run_dir_of(ckpt_path)
        changes = run_dirs.check_resume_config(run_dir, cfg, (ckpt.get("dataset") or {}).get("path"))
        log.info("resuming %s from %s (step %d)", run_dir, ckpt_path, ckpt["global_step"])
        del ckpt
    claim = run_dirs.claim_run_dir(run_dir)  # one live run per directory, before anything is generated
    try:
        return _train(cfg, run_dir, ckpt_path, run_id, resume_step, changes, command)
    finally:
        claim.release()


def _train(cfg: dict[str, Any], run_dir: Path, ckpt_path: Path | None, run_id: str | None,
           resume_step: int | None, changes: dict[str, list], command: str) -> Path:
    use_threads(cfg["threads"])
    L.seed_everything(cfg["seed"], workers=True, verbose=False)
    if cfg["data"]["mixture"]:  # several stores (training/mixture_data.py); none is generated
        dm, lang = build_mixture_data(cfg)
    else:
        check_against_store(cfg)  # a store that exists: its keys and the batch, before any top-up
        demos.ensure_dataset(cfg["task"])
        check_against_store(cfg)
        lang = demos.language_table(cfg["task"], cfg["data"]["cache_dir"])
        dm = wiring.build_datamodule(cfg, lang_dim=0 if lang is None else int(lang.shape[1]))
        demos.check_against_env_specs(dm.store, dm.obs_keys)
    module = wiring.build_module(cfg, dm, lang)
    init_from.prepare_finetuning(module, cfg, run_dir)
    logger = loggers.build_logger(cfg, run_dir, run_id, resume_step)
    module.wandb_run_id = loggers.wandb_run_id(logger)
    trainer = wiring.build_trainer(cfg, run_dir, logger, rollout_callbacks(cfg, module.dataset_info))
    if trainer.is_global_zero:
        if ckpt_path is None or not (run_dir / "config.yaml").exists():
            OmegaConf.save(OmegaConf.create(cfg), run_dir / "config.yaml")
        else:  # config.yaml stays what the earlier steps trained with; this segment's changes beside it
            run_dirs.record_resume(run_dir, changes, resume_step or 0, command)
        n_params = sum(p.numel() for p in module.policy.parameters())
        log.info("policy %s: %.2fM parameters; %d training / %d validation episodes; run dir %s",
                 cfg["policy"]["name"], n_params / 1e6, len(dm.train_ids), len(dm.val_ids), run_dir)
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=True)
    except SIGTERMException:
        raise Interrupted(143) from None  # 128 + SIGTERM, like a process killed by it
    if trainer.is_global_zero:
        log.info("checkpoints in %s", run_dir / "checkpoints")
        hint = loggers.wandb_sync_hint(run_dir)
        if hint:
            log.info("W&B run saved offline; upload it with: %s", hint)
    return run_dir
