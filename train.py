"""Train a policy: `python train.py policy=mode task=lift` (see conf/config.yaml for every knob).

Thin by design: the pieces live in training/wiring.py, data/ and envs/.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("train")


def ensure_dataset(task: dict[str, Any]) -> None:
    """Generate the task's demonstrations with its scripted expert when the store is missing or short."""
    from data.store import DemoStore, StoreError

    path = Path(task["dataset"])
    have = 0
    if path.exists():
        try:
            have = DemoStore.open(path).n_episodes
        except StoreError as err:
            raise SystemExit(f"error: {err}") from err
        if have >= task["n_demos"]:
            return
    from data.generate import generate

    log.info("generating %d demonstrations of %r with the scripted expert into %s (have %d)",
             task["n_demos"], task["name"], path, have)
    generate(task["name"], n_episodes=task["n_demos"], out=str(path), images=task["images"],
             workers=task["generate_workers"])


def language_table(task: dict[str, Any]):
    if not task["language"]:
        return None
    from data.store import DemoStore
    from policies.encoders.language import embed_instructions

    store = DemoStore.open(task["dataset"])
    # One embedding per task instruction, cached beside the dataset; never computed per step.
    return embed_instructions([t["instruction"] for t in store.tasks], cache_dir=task["dataset"])


def rollout_callbacks(cfg: dict[str, Any], info: dict[str, Any]) -> list:
    r = cfg["rollout_eval"]
    if not r["every_n_steps"]:
        return []
    from training.rollout_callback import RolloutEvalCallback

    return [RolloutEvalCallback(every_n_steps=r["every_n_steps"], n_episodes=r["n_episodes"],
                                workers=r["workers"], video_n=r["video_n"], tasks=info["tasks"],
                                demo_seeds=info["demo_seeds"])]


def train(cfg: dict[str, Any], run_dir: Path) -> Path:
    """Train as `cfg` says; returns the run directory (checkpoints/, config.yaml, logs)."""
    from training import wiring as training

    L.seed_everything(cfg["seed"], workers=True)
    ckpt_path, run_id = None, None
    if cfg["resume"]:
        ckpt_path = training.resolve_checkpoint(cfg["resume"])
        run_id = training.check_resumable(ckpt_path, cfg).get("wandb_run_id")
        run_dir = ckpt_path.parent.parent
        log.info("resuming %s from %s", run_dir, ckpt_path)
    run_dir.mkdir(parents=True, exist_ok=True)
    ensure_dataset(cfg["task"])
    dm = training.build_datamodule(cfg, language_table(cfg["task"]))
    module = training.build_module(cfg, dm)
    logger = training.build_logger(cfg, run_dir, run_id)
    module.wandb_run_id = training.wandb_run_id(logger)
    trainer = training.build_trainer(cfg, run_dir, logger, rollout_callbacks(cfg, module.dataset_info))
    if trainer.is_global_zero:
        OmegaConf.save(OmegaConf.create(cfg), run_dir / "config.yaml")
        n_params = sum(p.numel() for p in module.policy.parameters())
        log.info("policy %s: %.2fM parameters; %d training / %d validation episodes; run dir %s",
                 cfg["policy"]["name"], n_params / 1e6, len(dm.train_ids), len(dm.val_ids), run_dir)
    trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt_path) if ckpt_path else None)
    if trainer.is_global_zero:
        log.info("checkpoints in %s", run_dir / "checkpoints")
        hint = training.wandb_sync_hint(run_dir)
        if hint:
            log.info("W&B run saved offline; upload it with: %s", hint)
    return run_dir


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    train(resolved, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
