"""Real-time chunking guidance for EDM sampling (the idea of Black et al. 2025, "Real-Time Execution of
Action Chunking Flow Policies", adapted to EDM's denoiser; written here from the idea, not their code).

While a chunk executes, the next one is sampled from an observation taken `delay` steps before it can
take over. The actions the robot will execute in the meantime are committed; so are, softly, the ones
after them that the old chunk still planned. Each sampler step here replaces the denoised estimate D by

    D' = D + W ⊙ (Y - D)

where Y is the committed prefix placed at the chunk's own time steps and W a soft mask: 1 over the first
`delay` actions (they *will* be executed, so the new chunk must agree), then decaying to 0 over the rest
of the prefix, 0 beyond it (the mask: robot_client/transitions.py soft_prefix_weights). Because x moves
toward D' at every step, the network sees the committed actions in its input and continues them; at σ = 0
the first `delay` actions equal Y exactly.
Inpainting of the denoised estimate needs no gradient through the network (the paper's pseudo-inverse
guidance does), so it runs under inference_mode, with the expert cache and with compile=step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PrefixGuidance:
    """Y [B, T, Da] (the sampler's normalized units) and W [B, T, 1] or [B, T, Da] in [0, 1]."""

    target: torch.Tensor
    weights: torch.Tensor

    def __call__(self, denoised: torch.Tensor) -> torch.Tensor:
        return denoised + self.weights * (self.target - denoised)
