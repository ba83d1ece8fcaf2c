"""The pieces train.py wires together: data, policy, module, logger, callbacks, trainer, resume.

Everything takes plain dicts (the resolved Hydra config), so a notebook can call it too.
"""

from __future__ import annotations

import glob
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from data.dataset import default_normalizer_modes
from policies.base import Policy
from training.datamodule import DemoDataModule
from training.module import PolicyModule

POLICY_ONLY_KEYS = ("name",)
log = logging.getLogger("train")


# --- resume ----------------------------------------------------------------------------------
def resolve_checkpoint(path: str) -> Path:
    """A .ckpt file, or a run directory (-> its checkpoints/last.ckpt)."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "checkpoints" / "last.ckpt"
    if not p.is_file():
        raise FileNotFoundError(f"resume: no checkpoint at {p}; pass a run directory or a .ckpt file")
    return p


def check_resumable(ckpt_path: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Refuse, before anything is written, a checkpoint of another policy or another config."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    meta = ckpt.get("policy") if isinstance(ckpt, dict) else None
    if meta is None:
        raise ValueError(f"resume: {ckpt_path} is not a training checkpoint of this framework")
    if meta["name"] != cfg["policy"]["name"]:
        raise ValueError(f"resume: {ckpt_path} holds a {meta['name']!r} policy but this run asks for "
                         f"policy={cfg['policy']['name']}; pass the same policy")
    want = policy_config(cfg)
    diff = sorted(k for k in set(want) | set(meta["config"]) if want.get(k) != meta["config"].get(k))
    if diff:
        raise ValueError(f"resume: the policy config differs from the checkpoint's in {diff}; "
                         "resume with the run's own config (see <run dir>/.hydra/config.yaml)")
    return ckpt


# --- data and model ------------------------------------------------------------------------
def policy_config(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg["policy"].items() if k not in POLICY_ONLY_KEYS}


def build_datamodule(cfg: dict[str, Any], lang_table=None) -> DemoDataModule:
    p, d = cfg["policy"], cfg["data"]
    return DemoDataModule(
        cfg["task"]["dataset"], cfg["task"]["obs_keys"], p["n_obs_steps"], p["horizon"], p["n_action_steps"],
        batch_size=d["batch_size"], val_batch_size=d["val_batch_size"], num_workers=d["num_workers"],
        pin_memory=d["pin_memory"], val_ratio=d["val_ratio"], split_seed=d["split_seed"],
        max_train_episodes=d["max_train_episodes"], in_memory=d["in_memory"], lang_table=lang_table,
    )


def dataset_info(dm: DemoDataModule) -> dict[str, Any]:
    """What evaluation needs from the dataset, saved in every checkpoint."""
    return {"path": os.path.abspath(dm.store.path), "tasks": dm.store.tasks,
            "demo_seeds": [int(s) for s in dm.store.episode_seed], "obs_keys": dm.obs_keys}


def build_module(cfg: dict[str, Any], dm: DemoDataModule) -> PolicyModule:
    shape_meta = dm.shape_meta()
    modes = default_normalizer_modes(shape_meta, cfg["normalizer"]["action"], cfg["normalizer"]["low_dim"])
    normalizer = dm.fit_normalizer(modes)
    policy = Policy.build(cfg["policy"]["name"], policy_config(cfg), shape_meta, normalizer)
    if dm.lang_table is not None and hasattr(policy, "set_lang_table"):
        policy.set_lang_table(torch.as_tensor(dm.lang_table))  # checkpoints carry the embeddings
    return PolicyModule(policy, cfg["optim"], cfg["ema"], dataset_info(dm),
                        val_sample_batches=cfg["trainer"]["val_sample_batches"])


# --- logging ---------------------------------------------------------------------------------
def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def build_logger(cfg: dict[str, Any], run_dir: Path, run_id: str | None):
    kind = cfg["logger"]["type"]
    if kind == "none":
        return False
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(run_dir), name="csv", version="")
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


# --- callbacks and trainer -------------------------------------------------------------------
class SaveOnInterrupt(Callback):
    """Ctrl-C (or any other exception but a non-finite loss) saves last.ckpt before exiting."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt) and trainer.global_step > 0:
            trainer.save_checkpoint(self.path)
            print(f"\ninterrupted: saved {self.path}; resume with `python train.py resume={self.path.parent.parent}`")


class StepLog(Callback):
    """A plain log line every N steps (step, loss, speed, ETA): readable in log files and CI,
    where an interactive progress bar shows nothing until the end."""

    def __init__(self, every_n_steps: int) -> None:
        self.every = every_n_steps
        self._t0: float | None = None
        self._step0 = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0, self._step0 = time.perf_counter(), trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if not self.every or step % self.every or not trainer.is_global_zero or self._t0 is None:
            return
        rate = (step - self._step0) / max(time.perf_counter() - self._t0, 1e-9)
        eta = (trainer.max_steps - step) / max(rate, 1e-9)
        loss = trainer.callback_metrics.get("train/loss")
        loss_txt = f"loss {float(loss):.4f} | " if loss is not None else ""
        log.info("step %d/%d | %s%.2f steps/s | eta %dm%02ds", step, trainer.max_steps, loss_txt, rate,
                 eta // 60, eta % 60)


class RunPictures(Callback):
    """At the end of training: training_curve.png and (MoDE) expert_usage.png in the run directory,
    and on W&B when it is the logger."""

    def __init__(self, run_dir: Path, every_n_steps: int) -> None:
        self.run_dir, self.every = run_dir, max(1, every_n_steps)
        self.train: tuple[list[int], list[float]] = ([], [])
        self.val: list[tuple[int, float]] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = trainer.callback_metrics.get("train/loss")
        if trainer.global_step % self.every == 0 and loss is not None:
            self.train[0].append(trainer.global_step)
            self.train[1].append(float(loss))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if "val/loss" in trainer.callback_metrics and not trainer.sanity_checking:
            self.val.append((trainer.global_step, float(trainer.callback_metrics["val/loss"])))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        from training.plots import plot_expert_usage, plot_training_curve

        images = {}
        if self.train[0]:
            images["plots/training_curve"] = plot_training_curve(*self.train, self.run_dir / "training_curve.png",
                                                                 self.val)
        policy = pl_module.ema_policy() if hasattr(pl_module, "ema_policy") else pl_module.policy
        if getattr(getattr(policy, "net", None), "sparse_layers", lambda: [])():
            images["plots/expert_usage"] = plot_expert_usage(policy, self.run_dir / "expert_usage.png")
        from lightning.pytorch.loggers import WandbLogger

        if isinstance(trainer.logger, WandbLogger):
            for key, path in images.items():
                trainer.logger.log_image(key=key, images=[str(path)])


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
                                 save_last=True)
    return L.Trainer(
        default_root_dir=str(run_dir), max_steps=t["max_steps"], accelerator=t["accelerator"],
        devices=t["devices"], num_nodes=t["num_nodes"], strategy=t["strategy"],  # gloo on CPU
        precision=resolve_precision(str(t["precision"])), gradient_clip_val=t["gradient_clip_val"],
        val_check_interval=t["val_check_interval"], check_val_every_n_epoch=None,
        limit_val_batches=t["limit_val_batches"], log_every_n_steps=t["log_every_n_steps"],
        enable_progress_bar=t["enable_progress_bar"], deterministic=t["deterministic"], logger=logger,
        callbacks=[checkpoint, SaveOnInterrupt(ckpt_dir / "last.ckpt"), StepLog(t["print_every_n_steps"]),
                   RunPictures(run_dir, t["log_every_n_steps"]), *extra_callbacks],
        use_distributed_sampler=False,  # StepBatchSampler splits batches across ranks itself
        num_sanity_val_steps=0,
    )
