"""Rollout evaluation during training, as a Lightning callback.

    RolloutEvalCallback(tasks=info["tasks"], demo_seeds=info["demo_seeds"], every_n_steps=2000,
                        n_episodes=10, workers=2, video_n=1)

Every K steps (or epochs) it runs the rollout runner on the module's evaluation weights
(`pl_module.ema_policy()` when the module has it, else `pl_module.policy`), logs
`eval/success_rate` (so ModelCheckpoint can monitor it), its 95% interval, per-task rates, and,
with a WandbLogger, the first episode's video. The worker processes stay up between evaluations.
Does not import policies: the module hands over its policy object.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from rollouts.report import scalar_metrics, wandb_media
from rollouts.runner import EVAL_SEED_OFFSET, Runner


class RolloutEvalCallback(Callback):
    def __init__(self, tasks: Sequence[dict[str, Any]], n_episodes: int = 10, workers: int = 2,
                 video_n: int = 1, demo_seeds: Sequence[int] | None = None, every_n_steps: int = 0,
                 every_n_epochs: int = 0, env_factory: str | Callable[..., Any] | None = None,
                 env_kwargs: dict[str, Any] | None = None, max_steps: int | None = None,
                 stop_on_success: bool = True, seed_offset: int = EVAL_SEED_OFFSET,
                 video_dir: str | os.PathLike | None = None, video_fps: float = 20.0,
                 video_source: str = "render", video_render_kwargs: dict[str, Any] | None = None,
                 sample_seed: int = 0) -> None:
        super().__init__()
        if every_n_steps < 0 or every_n_epochs < 0 or (every_n_steps and every_n_epochs):
            raise ValueError("set one of every_n_steps / every_n_epochs to a positive number (0: off)")
        if n_episodes <= 0:
            raise ValueError(f"n_episodes must be positive, got {n_episodes}")
        self.tasks = list(tasks)
        self.every_n_steps, self.every_n_epochs = int(every_n_steps), int(every_n_epochs)
        self.n_episodes, self.workers, self.video_n = int(n_episodes), int(workers), int(video_n)
        self.demo_seeds = list(demo_seeds) if demo_seeds is not None else None
        self.env_factory, self.env_kwargs = env_factory, env_kwargs
        self.run_kwargs = dict(max_steps=max_steps, stop_on_success=stop_on_success, seed_offset=seed_offset,
                               video_fps=video_fps, video_source=video_source,
                               video_render_kwargs=video_render_kwargs)
        self.video_dir = video_dir
        self.sample_seed = sample_seed
        self.last_metrics: dict[str, Any] | None = None
        self._runner: Runner | None = None

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
    @staticmethod
    def eval_policy(pl_module: L.LightningModule) -> Any:
        ema = getattr(pl_module, "ema_policy", None)
        return ema() if callable(ema) else pl_module.policy

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
            self._runner = Runner(self.tasks, workers=self.workers, env_factory=self.env_factory,
                                  env_kwargs=self.env_kwargs)
        video_dir = None
        if self.video_n > 0:
            root = Path(self.video_dir or Path(trainer.default_root_dir) / "eval")
            video_dir = root / f"step_{trainer.global_step:08d}"
        policy = self.eval_policy(pl_module)
        was_training = policy.training
        policy.eval()
        devices = [pl_module.device] if pl_module.device.type == "cuda" else []
        try:
            # Sampling noise must not shift the training random stream (exact resume), and the
            # same weights should give the same score: fork the RNG and seed it.
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.sample_seed)
                return self._runner.run(policy, self.n_episodes, demo_seeds=self.demo_seeds,
                                        video_n=self.video_n, video_dir=video_dir, progress=False,
                                        **self.run_kwargs)
        finally:
            policy.train(was_training)

    @staticmethod
    def _log_media(trainer: L.Trainer, metrics: dict[str, Any]) -> None:
        if not metrics.get("video_paths") and len(metrics["per_task"]) < 2:
            return
        from lightning.pytorch.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_metrics(wandb_media(metrics), step=trainer.global_step)
