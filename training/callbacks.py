"""Lightning callbacks of a training run: saving on interrupt and on a clock, progress, pictures."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger("train")


def save_atomically(trainer: L.Trainer, path: Path) -> None:
    """The run's whole state to `path` through its checkpoint IO (training/checkpoint_io.py): written beside,
    then renamed, so a kill during the write leaves the previous file whole; a failed write stops the run."""
    # The whole state (optimizer, loops) so that the run resumes. Said explicitly: left unset, Lightning logs
    # "`weights_only` was not set, defaulting to `False`", which reads like a warning about loading.
    trainer.save_checkpoint(path, weights_only=False)


class SaveOnInterrupt(Callback):
    """Ctrl-C or SIGTERM saves last.ckpt before the run stops (train.py then exits non-zero)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt | SIGTERMException) and trainer.global_step > 0:
            save_atomically(trainer, self.path)
            if trainer.is_global_zero:
                print(f"\ninterrupted at step {trainer.global_step}: saved {self.path}; resume with "
                      f"`python train.py resume={self.path.parent.parent}`", flush=True)


class PeriodicCheckpoint(Callback):
    """last.ckpt every N steps and/or every M minutes, so a kill -9 loses at most that much training, and
    at the end of training."""

    def __init__(self, path: Path, every_n_steps: int = 0, every_n_minutes: float = 0.0) -> None:
        self.path, self.every_n_steps, self.every_s = path, int(every_n_steps), float(every_n_minutes) * 60.0
        self._last_save = time.monotonic()
        self._saved_step = -1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        by_steps = self.every_n_steps > 0 and step % self.every_n_steps == 0
        by_clock = self.every_s > 0 and time.monotonic() - self._last_save >= self.every_s
        if by_clock:  # every rank must agree, or a collective save in DDP would hang
            by_clock = bool(trainer.strategy.broadcast(by_clock, src=0))
        if by_steps or by_clock:
            save_atomically(trainer, self.path)
            self._last_save = time.monotonic()
            self._saved_step = step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The steps after the last validation (max_steps not a multiple of val_check_interval) are not in
        # ModelCheckpoint's last.ckpt: the run's final weights must be.
        if trainer.global_step > 0 and self._saved_step != trainer.global_step:
            save_atomically(trainer, self.path)


class StepProgressBar(TQDMProgressBar):
    """One bar over optimizer steps (training is bounded by steps; epochs have no meaning here)."""

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        bar = self.train_progress_bar
        if bar.total != trainer.max_steps:
            bar.reset(total=trainer.max_steps)
            bar.initial = trainer.global_step
            bar.n = trainer.global_step
            bar.set_description("train")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        bar = self.train_progress_bar
        if bar is not None and self._should_update(trainer.global_step, bar.total):
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # refreshes the bar

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass  # the bar lives across epochs

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.train_progress_bar.close()


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
        with pl_module.evaluation_weights() as policy:
            if getattr(getattr(policy, "net", None), "sparse_layers", lambda: [])():
                images["plots/expert_usage"] = plot_expert_usage(policy, self.run_dir / "expert_usage.png")
        from lightning.pytorch.loggers import WandbLogger

        if isinstance(trainer.logger, WandbLogger):
            for key, path in images.items():
                trainer.logger.log_image(key=key, images=[str(path)])
