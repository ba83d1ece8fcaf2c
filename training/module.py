"""The Lightning module that trains any Policy: AdamW, warmup + cosine, EMA, logging, checkpoints.

`eval_weights()` (the EMA copy) is what validation, rollouts and the `policy` entry of every checkpoint use;
the live weights and the optimizer state are in the checkpoint too, so training resumes exactly.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from policies.base import CHECKPOINT_FORMAT_VERSION, Policy, compile_loss
from training.ema import EMA

_NO_DECAY_MODULES = (nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.BatchNorm1d, nn.BatchNorm2d)


class NonFiniteLoss(RuntimeError):
    pass


def non_finite_inputs(batch: dict[str, Any]) -> list[str]:
    """Names of the floating-point batch entries that hold NaN or inf."""
    named = {"action": batch["action"], **{f"obs/{k}": v for k, v in batch["obs"].items()}}
    return [k for k, v in named.items() if v.is_floating_point() and not torch.isfinite(v).all()]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay on weight matrices only: not on norms, biases, embeddings or learned positions."""
    no_decay: set[int] = set()
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if isinstance(module, _NO_DECAY_MODULES) or p.ndim < 2 or "pos" in pname or "emb" in pname:
                no_decay.add(id(p))
    decay_params = [p for p in model.parameters() if p.requires_grad and id(p) not in no_decay]
    other = [p for p in model.parameters() if p.requires_grad and id(p) in no_decay]
    return [{"params": decay_params, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]


def split_new_params(groups: list[dict[str, Any]], model: nn.Module, new_names: frozenset[str],
                     new_lr: float) -> list[dict[str, Any]]:
    """Each group split in two: the parameters named in `new_names` get their own learning rate."""
    new_ids = {id(p) for n, p in model.named_parameters() if n in new_names}
    out = []
    for g in groups:
        out.append({**g, "params": [p for p in g["params"] if id(p) not in new_ids]})
        out.append({**g, "params": [p for p in g["params"] if id(p) in new_ids], "lr": new_lr})
    return out


def adamw(params: Any, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
          weight_decay: float = 0.01) -> torch.optim.AdamW:
    """AdamW with PyTorch's fused kernel wherever every parameter allows it (floating point, on the CPU or a
    CUDA device): one pass over each tensor. Without it the CPU runs a loop of a dozen elementwise ops per
    parameter, 4-5x the time (a tenth of MoDE's training step at width 512, one thread), which taxed MoDE,
    with more parameters than its active ones, more than the dense DiT (docs/training-speed.md)."""
    groups = list(params)
    tensors = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    fused = bool(tensors) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in tensors)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=fused or None)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier: linear warm-up to 1, then cosine down to min_lr_ratio at total_steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class PolicyModule(L.LightningModule):
    def __init__(self, policy: Policy, optim: dict[str, Any], ema: dict[str, Any],
                 dataset_info: dict[str, Any] | None = None,
                 val_sample_batches: int = 1, compile: bool = False) -> None:
        super().__init__()
        self.policy = policy
        # trainer.compile: the loss (forward; its backward through AOTAutograd) as one torch.compile graph
        # (policies/base.py compile_loss); the optimizer step, EMA and logging stay eager.
        self.compute_loss = compile_loss(policy) if compile else policy.compute_loss
        self.optim_cfg = dict(optim)
        ema_kwargs = {k: v for k, v in ema.items() if k != "enabled"}
        self.ema = EMA(policy, **ema_kwargs) if ema.get("enabled", True) else None
        self.dataset_info = dict(dataset_info or {})
        self.val_sample_batches = val_sample_batches
        self.wandb_run_id: str | None = None
        # Parameters a fine-tuning run did not copy from its init_from checkpoint (training/init_from.py):
        # their learning rate is scaled by optim.new_param_lr_mult.
        self.new_param_names: frozenset[str] = frozenset()

    def eval_weights(self) -> Policy:
        """The one answer to "which weights are evaluated": the EMA average when enabled, else the live
        policy. Validation, rollouts, pictures and the `policy` entry of every checkpoint use it."""
        return self.ema.model if self.ema is not None else self.policy

    @contextlib.contextmanager
    def evaluation_weights(self) -> Iterator[Policy]:
        """`eval_weights()` in eval mode (deterministic routing, no dropout), its mode restored after."""
        policy = self.eval_weights()
        was_training = policy.training
        policy.eval()
        try:
            yield policy
        finally:
            policy.train(was_training)

    # --- training ------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, metrics = self.compute_loss(batch)
        if not torch.isfinite(loss):
            bad = non_finite_inputs(batch)
            if bad:  # the data, not the optimisation, is the first suspect
                raise NonFiniteLoss(
                    f"the training batch at step {self.global_step} holds non-finite values in {bad}; the "
                    "dataset is broken: check it with `python -m data.inspect STORE --check` and regenerate "
                    "or re-convert it")
            self._diverged(f"training loss became {loss.item()}")
        bs = batch["action"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        for k, v in metrics.items():
            if torch.is_tensor(v) and v.numel() == 1:
                self.log(f"train/{k}", v, batch_size=bs)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=bs)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Lightning clips after this hook; the norm logged here is the unclipped one.
        norms = [p.grad.detach().norm() for p in self.policy.parameters() if p.grad is not None]
        if norms:
            self.log("train/grad_norm", torch.stack(norms).norm())

    def _diverged(self, what: str) -> None:
        raise NonFiniteLoss(
            f"{what} at step {self.global_step}; stopping. The last good checkpoint is kept "
            "(checkpoints/last.ckpt). Try a lower optim.lr or stronger trainer.gradient_clip_val."
        )

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # One fused norm over all weights: a non-finite step is caught before it reaches the EMA,
        # a checkpoint, or the next forward pass (where it would surface as an obscure error).
        if not torch.isfinite(torch.stack(torch._foreach_norm(list(self.policy.parameters()))).sum()):
            self._diverged("the weights became non-finite")
        if self.ema is not None:
            self.ema.update(self.policy, step=self.global_step)

    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.optim_cfg
        groups = param_groups(self.policy, cfg["weight_decay"])
        if self.new_param_names:
            groups = split_new_params(groups, self.policy, self.new_param_names,
                                      cfg["lr"] * cfg.get("new_param_lr_mult", 1.0))
        opt = adamw(groups, lr=cfg["lr"], betas=tuple(cfg["betas"]), eps=cfg.get("eps", 1e-8))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, cfg["warmup_steps"], cfg["total_steps"], cfg["min_lr_ratio"])
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # --- validation on the EMA weights --------------------------------------------------
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        policy = self.eval_weights()  # Lightning has put the whole module in eval mode
        bs = batch["action"].shape[0]
        # Fork the RNG so validation never changes the training random stream (exact resume).
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(batch_idx)
            loss, metrics = policy.compute_loss(batch)
            if not torch.isfinite(loss):  # as in training: a NaN must not rank checkpoints or pass silently
                bad = non_finite_inputs(batch)
                raise NonFiniteLoss(
                    f"validation loss became {loss.item()} at step {self.global_step}"
                    + (f": the validation batch holds non-finite values in {bad}; check the store with "
                       "`python -m data.inspect STORE --check`" if bad else "; stopping (checkpoints/last.ckpt "
                       "is the last good state)"))
            self.log("val/loss", loss, prog_bar=True, batch_size=bs, sync_dist=True)
            # val/loss carries MoDE's load-balancing and z terms (a near-constant ~0.01 offset);
            # the diffusion term alone is what compares across policies.
            self.log("val/diffusion_loss", metrics["diffusion_loss"], batch_size=bs, sync_dist=True)
            if batch_idx < self.val_sample_batches:
                self.log("val/action_mse", self._sampled_action_mse(policy, batch), batch_size=bs,
                         sync_dist=True)

    @torch.no_grad()
    def _sampled_action_mse(self, policy: Policy, batch: dict[str, Any]) -> torch.Tensor:
        """MSE (env units) between a sampled chunk and the demonstrated one, over unpadded steps."""
        goal = {"task": batch["task"], **batch.get("goal", {})}
        pred = policy.predict_action(batch["obs"], goal)
        to = policy.config["n_obs_steps"]
        target = batch["action"][:, to - 1 : to - 1 + pred.shape[1]]
        valid = ~batch["action_is_pad"][:, to - 1 : to - 1 + pred.shape[1]]
        if hasattr(policy, "action_dims"):  # several robots, actions padded: each row over its own dimensions
            sq = (pred - target[..., : pred.shape[-1]]) ** 2
            err = sq.sum(-1) / policy.action_dims(batch)[:, None]
        else:
            err = ((pred - target) ** 2).mean(-1)
        return (err * valid).sum() / valid.sum().clamp(min=1)

    # --- checkpoints ----------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["policy"] = self.eval_weights().checkpoint_dict()
        checkpoint["format_version"] = CHECKPOINT_FORMAT_VERSION
        checkpoint["dataset"] = self.dataset_info
        checkpoint["wandb_run_id"] = self.wandb_run_id
        np_state = np.random.get_state()
        checkpoint["rng"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "python": random.getstate(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if checkpoint.get("policy", {}).get("name") not in (None, self.policy.name):
            raise ValueError(
                f"cannot resume: the checkpoint holds a {checkpoint['policy']['name']!r} policy, "
                f"this run builds {self.policy.name!r}"
            )
        self.wandb_run_id = checkpoint.get("wandb_run_id")
        rng = checkpoint.get("rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            name, keys, *rest = rng["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
            random.setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in rng["python"]))
