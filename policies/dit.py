"""Dense DiT baseline: MoDE's transformer (policies/mode.py) with one dense SwiGLU MLP per block.

The fair comparison for MoDE is a dense model that computes as much per sample, so by default the MLP
hidden size is chosen to make the DiT's total parameters equal MoDE's *active* parameters (k experts
and the router per block). `dit_config_matching(mode_config)` gives that config for any MoDE config,
and, with same="total", the dense model with as many parameters as MoDE has in all.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import nn

from policies.base import register_policy
from policies.mode import MoDEConfig, SwiGLU, TransformerConfig, TransformerPolicy


def matched_mlp_hidden(mode_cfg: MoDEConfig, same: str = "active") -> int:
    """Dense SwiGLU hidden size whose 3·d·h parameters equal one MoDE block's active (or total) MLP."""
    if same not in ("active", "total"):
        raise ValueError(f"same must be 'active' or 'total', got {same!r}")
    d, e, rh = mode_cfg.width, mode_cfg.num_experts, mode_cfg.router_hidden
    expert = 3 * d * mode_cfg.expert_hidden
    router = d * rh + rh + rh * e + e if rh > 0 else d * e + e
    n_used = mode_cfg.top_k if same == "active" else e
    per_block = n_used * expert + router + (expert if mode_cfg.shared_expert else 0)
    return max(1, round(per_block / (3 * d)))


@dataclass
class DiTConfig(TransformerConfig):
    mlp_hidden: int = 0  # 0: match the active params of MoDE with the same transformer and default experts

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mlp_hidden == 0:
            shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(TransformerConfig)}
            self.mlp_hidden = matched_mlp_hidden(MoDEConfig(**shared))
        if self.mlp_hidden < 1:
            raise ValueError(f"mlp_hidden must be >= 1 (or 0 for auto), got {self.mlp_hidden}")


def dit_config_matching(mode_config: dict[str, Any], same: str = "active") -> dict[str, Any]:
    """The DiT config with MoDE's transformer whose params equal the given MoDE's active/total params."""
    mode_cfg = MoDEConfig.from_dict(mode_config, policy="mode")
    shared = {f.name: getattr(mode_cfg, f.name) for f in dataclasses.fields(TransformerConfig)}
    return {**shared, "mlp_hidden": matched_mlp_hidden(mode_cfg, same)}


@register_policy("dit")
class DiTPolicy(TransformerPolicy):
    config_cls = DiTConfig
    cfg: DiTConfig

    def make_mlp(self, out_std: float) -> nn.Module:
        return SwiGLU(self.cfg.width, self.cfg.mlp_hidden, out_std)
