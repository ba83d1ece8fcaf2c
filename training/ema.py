"""Exponential moving average of a policy's weights, with a power-law warm-up.

decay(step) = clamp(1 - (1 + step) ** -power, min_decay, max_decay)

A plain 0.999 decay leaves the EMA weights mostly at their initial values for the first
~1,500 steps (success stays at 0 for short CPU runs); the power schedule starts near 0 and
approaches max_decay as training goes on (power 0.75: 0.97 at step 100, 0.994 at step 1,000).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    def __init__(self, model: nn.Module, power: float = 0.75, min_decay: float = 0.0,
                 max_decay: float = 0.9999) -> None:
        super().__init__()
        if not 0.0 <= min_decay <= max_decay < 1.0:
            raise ValueError(f"need 0 <= min_decay <= max_decay < 1, got {min_decay}, {max_decay}")
        # The copy follows the module's train/eval mode like any submodule; whoever samples from it
        # puts it in eval mode (PolicyModule.evaluation_weights), so no module sits in eval mode at fit start.
        self.model = copy.deepcopy(model).requires_grad_(False)
        self.power, self.min_decay, self.max_decay = power, min_decay, max_decay
        self.register_buffer("n_updates", torch.zeros((), dtype=torch.long))

    def decay(self, step: int) -> float:
        value = 1.0 - (1.0 + step) ** -self.power
        return min(max(value, self.min_decay), self.max_decay)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int | None = None) -> None:
        step = int(self.n_updates) if step is None else step
        d = self.decay(step)
        ema_params = [p for p in self.model.parameters()]
        params = [p.detach() for p in model.parameters()]
        # One fused lerp over all parameters: ema <- ema + (1 - d) * (p - ema).
        torch._foreach_lerp_(ema_params, params, 1.0 - d)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)  # buffers (normalizer stats, language table) follow the live model
        self.n_updates += 1
