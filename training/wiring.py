"""The pieces a training run is built from: data module, policy + Lightning module, trainer.

Everything takes plain dicts (the resolved Hydra config), so a notebook can call it too.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from data.dataset import default_normalizer_modes
from policies.base import Policy
from training.callbacks import PeriodicCheckpoint, RunPictures, SaveOnInterrupt, StepLog, StepProgressBar
from training.checkpoint import LAST, policy_config
from training.checkpoint_io import CheckedCheckpointIO
from training.datamodule import DemoDataModule
from training.module import PolicyModule

log = logging.getLogger("train")


# --- data and model ------------------------------------------------------------------------
def build_datamodule(cfg: dict[str, Any], lang_dim: int = 0) -> DemoDataModule:
    p, d = cfg["policy"], cfg["data"]
    return DemoDataModule(
        cfg["task"]["dataset"], cfg["task"]["obs_keys"], p["n_obs_steps"], p["horizon"], p["n_action_steps"],
        batch_size=d["batch_size"], val_batch_size=d["val_batch_size"], num_workers=d["num_workers"],
        pin_memory=d["pin_memory"], val_ratio=d["val_ratio"], split_seed=d["split_seed"],
        max_train_episodes=d["max_train_episodes"], in_memory=d["in_memory"], cache_mb=d["cache_mb"],
        lang_dim=lang_dim,
    )


def dataset_info(dm: DemoDataModule) -> dict[str, Any]:
    """What evaluation needs from the dataset, saved in every checkpoint."""
    if hasattr(dm, "dataset_info"):  # a mixture (training/mixture_data.py) says it itself
        return dm.dataset_info()
    return {"path": os.path.abspath(dm.store.path), "tasks": dm.store.tasks,
            "demo_seeds": [int(s) for s in dm.store.episode_seed], "obs_keys": dm.obs_keys}


def build_module(cfg: dict[str, Any], dm: DemoDataModule, lang_table=None) -> PolicyModule:
    """The policy (normalizer fitted on the training episodes) inside its Lightning module. The language
    table, when there is one, goes into the policy once: training and rollouts both read it there."""
    shape_meta = dm.shape_meta()
    modes = default_normalizer_modes(shape_meta, cfg["normalizer"]["action"], cfg["normalizer"]["low_dim"])
    normalizer = dm.fit_normalizer(modes)
    bad = [k for k, m in normalizer.maps.items()
           if not (torch.isfinite(m.offset).all() and torch.isfinite(m.scale).all())]
    if bad:  # NaN/inf in the data poison the statistics and then every loss: name the data, not the optimiser
        from training.demos import DatasetError

        where, store = (dm.label(), "STORE") if hasattr(dm, "label") else (dm.store.path, dm.store.path)
        raise DatasetError(f"{where}: the training episodes of {bad} hold NaN or inf; find them with "
                           f"`python -m data.inspect {store} --check`, then regenerate, re-convert or "
                           "drop those episodes")
    policy = Policy.build(cfg["policy"]["name"], policy_config(cfg), shape_meta, normalizer)
    if lang_table is not None:
        policy.set_lang_table(torch.as_tensor(lang_table))  # saved in every checkpoint
    return PolicyModule(policy, cfg["optim"], cfg["ema"], dataset_info(dm),
                        val_sample_batches=cfg["trainer"]["val_sample_batches"], compile=cfg["trainer"]["compile"])


# --- trainer ---------------------------------------------------------------------------------
def resolve_precision(precision: str) -> str:
    if precision != "auto":
        return precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def build_trainer(cfg: dict[str, Any], run_dir: Path, logger, extra_callbacks: list[Callback]) -> L.Trainer:
    t, c = cfg["trainer"], cfg["checkpoint"]
    ckpt_dir = run_dir / "checkpoints"
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="step{step:06d}", auto_insert_metric_name=False,
                                 monitor=c["monitor"], mode=c["mode"], save_top_k=c["save_top_k"],
                                 save_last=True,
                                 # last.ckpt is also written by PeriodicCheckpoint and SaveOnInterrupt: overwrite
                                 # it rather than starting last-v1.ckpt beside a stale last.ckpt
                                 enable_version_counter=False)
    callbacks = [checkpoint, SaveOnInterrupt(run_dir / LAST),
                 PeriodicCheckpoint(run_dir / LAST, c["every_n_steps"], c["every_n_minutes"]),
                 StepLog(t["print_every_n_steps"]), RunPictures(run_dir, t["log_every_n_steps"]), *extra_callbacks]
    # A bar redrawn every step only floods a log file or CI; there, StepLog's plain lines say the same.
    progress_bar = bool(t["enable_progress_bar"]) and sys.stderr.isatty()
    if progress_bar:
        callbacks.append(StepProgressBar())
    return L.Trainer(
        default_root_dir=str(run_dir), max_steps=t["max_steps"], accelerator=t["accelerator"],
        devices=t["devices"], num_nodes=t["num_nodes"], strategy=t["strategy"],  # gloo on CPU
        precision=resolve_precision(str(t["precision"])), gradient_clip_val=t["gradient_clip_val"],
        val_check_interval=t["val_check_interval"], check_val_every_n_epoch=None,
        limit_val_batches=t["limit_val_batches"], log_every_n_steps=t["log_every_n_steps"],
        enable_progress_bar=progress_bar, deterministic=t["deterministic"], logger=logger,
        callbacks=callbacks, plugins=[CheckedCheckpointIO()],  # a save that fails stops the run in one line
        use_distributed_sampler=False,  # StepBatchSampler splits batches across ranks itself
        num_sanity_val_steps=0,
        enable_model_summary=False,  # train.py logs the parameter count in one line
    )
