"""PyTorch reference twins of the MoE ops: the specification every backend must match.

Shapes (MoDE routes per sample, so every token of a sample uses the same experts):
  x        [B, T, d]     tokens of B samples
  w13      [E, 2h, d]    rows [0, h) gate projection, rows [h, 2h) up projection
  w2       [E, d, h]     down projection
  ids      [B, k] int64  chosen experts per sample
  weights  [B, k]        their (renormalized) routing weights
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def swiglu_expert(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """One SwiGLU expert: w2 @ (silu(gate) * up) on the last dim of x."""
    h = w13.shape[0] // 2
    gate_up = x @ w13.t()
    return (F.silu(gate_up[..., :h]) * gate_up[..., h:]) @ w2.t()


def moe_mlp_reference(
    x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Weighted sum over the k chosen experts of each sample (per-sample loop: clear, slow)."""
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        for j in range(ids.shape[1]):
            e = ids[b, j]
            out[b] = out[b] + weights[b, j].to(x.dtype) * swiglu_expert(x[b], w13[e], w2[e])
    return out


def cached_moe_mlp_reference(
    x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Inference with one routing for the whole batch: x [M, d], ids [k], weights [k]."""
    out = torch.zeros_like(x)
    for j in range(ids.shape[0]):
        out = out + weights[j].to(x.dtype) * swiglu_expert(x, w13[ids[j]], w2[ids[j]])
    return out


def route_reference(
    logits: torch.Tensor, k: int, training: bool = False, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Softmax, top-k (sampled without replacement while training), renormalized weights.

    Returns ids [B, k], weights [B, k] and load-balance statistics:
      probs_mean [E]: mean router probability per expert over the batch
      load       [E]: fraction of the B*k assignments that went to each expert
    """
    n_experts = logits.shape[-1]
    if not 1 <= k <= n_experts:
        raise ValueError(f"top_k must be in [1, {n_experts}], got {k}")
    probs = logits.float().softmax(dim=-1)
    if training:
        ids = torch.multinomial(probs, k, replacement=False, generator=generator)
    else:
        ids = probs.topk(k, dim=-1).indices
    chosen = probs.gather(-1, ids)
    weights = (chosen / chosen.sum(dim=-1, keepdim=True)).to(logits.dtype)
    counts = torch.zeros(n_experts, device=logits.device, dtype=torch.float32)
    counts.scatter_add_(0, ids.reshape(-1), torch.ones(ids.numel(), device=logits.device))
    stats = {"probs_mean": probs.mean(dim=0), "load": counts / ids.numel()}
    return ids, weights, stats
