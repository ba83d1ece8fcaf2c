"""Rollout evaluation during training, as a Lightning callback.

    options = RolloutOptions(n_episodes=10, workers=2, video=VideoOptions(n=1))
    RolloutEvalCallback(info["tasks"], options, demo_seeds=info["demo_seeds"], every_n_steps=2000)

Every K steps (or epochs) it runs the rollout runner on the module's evaluation weights
(`pl_module.evaluation_weights()`, training/module.py: the EMA copy when enabled, in eval mode),
logs `eval/success_rate` (so ModelCheckpoint can monitor it), its 95% interval, per-task rates,
and, with a WandbLogger, the videos and the per-task table. The worker processes stay up between
evaluations. Videos go to `options.video.dir` (default <root dir>/eval)/step_NNNNNNNN/.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from rollouts.options import RolloutOptions, VideoOptions
from rollouts.report import scalar_metrics
from rollouts.runner import Runner


class RolloutEvalCallback(Callback):
    def __init__(self, tasks: Sequence[dict[str, Any]], options: RolloutOptions,
                 demo_seeds: Sequence[int] | None = None, every_n_steps: int = 0, every_n_epochs: int = 0) -> None:
        super().__init__()
        if every_n_steps < 0 or every_n_epochs < 0 or (every_n_steps and every_n_epochs):
            raise ValueError("set one of every_n_steps / every_n_epochs to a positive number (0: off)")
        self.tasks = list(tasks)
        # Lightning owns the console during fit: no second progress bar.
        self.options = options.replace(progress=False)
        self.demo_seeds = list(demo_seeds) if demo_seeds is not None else None
        self.every_n_steps, self.every_n_epochs = int(every_n_steps), int(every_n_epochs)
        self.last_metrics: dict[str, Any] | None = None
        self._runner: Runner | None = None

    @classmethod
    def from_config(cls, r: dict[str, Any], tasks: Sequence[dict[str, Any]], demo_seeds: Sequence[int] | None,
                    **options: Any) -> RolloutEvalCallback:
        """From conf/config.yaml's `rollout_eval` (every_n_steps, n_episodes, workers, video_n); `options`:
        further RolloutOptions fields."""
        opts = RolloutOptions(n_episodes=r["n_episodes"], workers=r["workers"], video=VideoOptions(n=r["video_n"]),
                              max_steps=r.get("max_steps"), **options)
        return cls(tasks, opts, demo_seeds=demo_seeds, every_n_steps=r["every_n_steps"])

    # --- when ------------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0:
            self.evaluate(trainer, pl_module, on_step=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.evaluate(trainer, pl_module, on_step=False)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.close()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        self.close()

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    # --- what ------------------------------------------------------------------------------
    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, on_step: bool) -> dict[str, Any]:
        metrics = None
        if trainer.is_global_zero:
            metrics = self._rollouts(trainer, pl_module)
        # Every rank logs the same numbers, so a monitoring ModelCheckpoint agrees across ranks.
        metrics = trainer.strategy.broadcast(metrics, src=0)
        for key, value in scalar_metrics(metrics).items():
            pl_module.log(key, value, on_step=on_step, on_epoch=not on_step, batch_size=1,
                          prog_bar=key == "eval/success_rate")
        if trainer.is_global_zero:
            self._log_media(trainer, metrics)
        self.last_metrics = metrics
        return metrics

    def _rollouts(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        if self._runner is None:
            self._runner = Runner(self.tasks, self.options)
        options = self.options
        if options.video.n > 0:
            root = Path(options.video.dir or Path(trainer.default_root_dir) / "eval")
            options = options.replace(video={"dir": root / f"step_{trainer.global_step:08d}"})
        # The runner seeds the sampling noise (options.sample_seed) on a forked RNG: the training
        # random stream is untouched (exact resume) and the same weights get the same score.
        with pl_module.evaluation_weights() as policy:
            return self._runner.run(policy, options, demo_seeds=self.demo_seeds)

    @staticmethod
    def _log_media(trainer: L.Trainer, metrics: dict[str, Any]) -> None:
        from lightning.pytorch.loggers import WandbLogger

        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not loggers:
            return
        from training.eval_logging import wandb_media

        media = wandb_media(metrics)
        for logger in loggers if media else []:
            logger.log_metrics(media, step=trainer.global_step)
