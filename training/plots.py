"""Pictures of a training run: MoDE's expert usage against the noise level, and the training curve.

Because MoDE routes on σ alone, the experts each layer runs at every noise level are a property of
the weights, not of the data: one router pass over a grid of σ draws the whole map.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


@torch.no_grad()
def expert_weights_vs_sigma(policy: torch.nn.Module, n_sigmas: int = 64, sigma_min: float = 1e-3,
                            sigma_max: float = 80.0) -> tuple[np.ndarray, np.ndarray]:
    """(σ [S], weights [L, S, E]): the renormalized top-k routing weight of every expert at eval."""
    net = getattr(policy, "net", None)
    moes = net.sparse_layers() if net is not None and hasattr(net, "sparse_layers") else []
    if not moes:
        raise ValueError(f"{type(policy).__name__} has no sparse expert layers to plot")
    sigmas = np.exp(np.linspace(math.log(sigma_min), math.log(sigma_max), n_sigmas))
    table = net.plan_routes(sigmas.tolist())  # the expert cache's own routing: ids / weights [S, L, k]
    n_experts = moes[0].w13.shape[0]
    dense = torch.zeros(len(sigmas), len(moes), n_experts, device=table.weights.device)
    dense.scatter_(2, table.ids.long(), table.weights.float())
    return sigmas, dense.transpose(0, 1).cpu().numpy()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_expert_usage(policy: torch.nn.Module, path: str | os.PathLike) -> Path:
    """A heatmap per layer: experts (rows) by noise level (columns), colour = routing weight."""
    sigmas, weights = expert_weights_vs_sigma(policy)
    plt = _pyplot()
    n_layers, _, n_experts = weights.shape
    fig, axes = plt.subplots(n_layers, 1, figsize=(7, 1.0 + 0.35 * n_experts * n_layers), dpi=120,
                             sharex=True, squeeze=False)
    for layer, ax in enumerate(axes[:, 0]):
        im = ax.imshow(weights[layer].T, aspect="auto", origin="lower", vmin=0, vmax=1, cmap="viridis",
                       extent=(math.log10(sigmas[0]), math.log10(sigmas[-1]), -0.5, n_experts - 0.5))
        ax.set_ylabel(f"layer {layer}\nexpert", fontsize=7)
        ax.set_yticks(range(n_experts))
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("log10 σ (noise level)")
    fig.colorbar(im, ax=axes[:, 0].tolist(), label="routing weight", shrink=0.8)
    fig.suptitle("MoDE expert usage vs noise level (eval routing)", fontsize=9)
    path = Path(path)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_training_curve(steps: Sequence[int], losses: Sequence[float], path: str | os.PathLike,
                        val: Sequence[tuple[int, float]] = ()) -> Path:
    """Training loss (log scale) against optimizer steps, with validation loss points when given."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(steps, losses, lw=1, label="train/loss")
    if val:
        ax.plot(*zip(*val), "o-", ms=3, label="val/loss")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
