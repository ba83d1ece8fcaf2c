"""Image-token bottlenecks: the task-conditioned codebook of Eftekhar et al. 2023 ("Selective Visual
Representations Improve Convergence and Generalization for Embodied AI") and a linear control.

One bottleneck per camera replaces that camera's feature -> token projection in policies/encoders/obs.py:

  codebook  z = [visual feature ; goal embedding]        fused per camera frame
            scores = Linear(ReLU(z)) / temperature       [N, K]
            P = index(scores)                            softmax | topk_softmax | gumbel
            P = Dropout(P)                               training only: the paper's guard against collapse
            h = P · C                                    C [K, code_dim]: learned codes
            token = Linear(h)                            back up to the token width
  linear    h = Linear(ReLU(z)) with code_dim outputs, then the same Linear up: a bottleneck of the same
            width without codes (the control the paper's reviewers asked for)
  none      no bottleneck (obs.py's plain Linear projection)

Indexing, as in the authors' code: softmax over all K codes; topk_softmax keeps the k largest scores
(softmax over those k, so P stays a convex combination; the authors' code leaves the top-k
probabilities unrenormalized); gumbel is a hard one-hot with the straight-through gradient of the
Gumbel-softmax while training and the argmax at eval (no dropout: the Gumbel noise regularizes it, and
dropping a one-hot would zero the token). At eval every row of P sums to 1.

Code usage of the last forward (`usage_metrics`, tensors, no host sync): entropy (mean per-frame
entropy of P, nats: how soft each lookup is), perplexity (exp of the entropy of the batch-mean P: how
many codes are in use) and dead_codes (codes whose batch-mean weight is under DEAD_CODE_SHARE of the
uniform share 1/K).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

KINDS = ("none", "codebook", "linear")
INDEXINGS = ("softmax", "topk_softmax", "gumbel")
DEAD_CODE_SHARE = 0.01  # a code is dead when its mean weight is < 1% of the uniform share 1/K


@dataclass
class CodebookConfig:
    """policy.codebook.* (conf/policy/mode.yaml)."""

    kind: str = "none"  # none | codebook | linear
    size: int = 256  # K codes
    code_dim: int = 10  # width of each code (and of the linear control's bottleneck)
    dropout: float = 0.1  # on the code probabilities, training only (softmax / topk_softmax)
    indexing: str = "softmax"  # softmax | topk_softmax | gumbel
    topk: int = 16  # codes kept by topk_softmax
    temperature: float = 1.0  # scores are divided by it before indexing

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown codebook.kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.indexing not in INDEXINGS:
            raise ValueError(f"unknown codebook.indexing {self.indexing!r}; "
                             f"choose one of {', '.join(INDEXINGS)}")
        if self.size < 2:
            raise ValueError(f"codebook.size (K) must be >= 2 codes, got {self.size}")
        if self.code_dim < 1:
            raise ValueError(f"codebook.code_dim must be >= 1, got {self.code_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"codebook.dropout must be in [0, 1), got {self.dropout}")
        if self.indexing == "topk_softmax" and not 1 <= self.topk <= self.size:
            raise ValueError(f"codebook.topk must be in [1, size={self.size}], got {self.topk}")
        if self.temperature <= 0:
            raise ValueError(f"codebook.temperature must be positive, got {self.temperature}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> CodebookConfig:
        data = dict(data or {})
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ValueError(f"unknown codebook config key(s) {unknown}; valid keys: {', '.join(valid)}")
        return cls(**data)


def fuse(feat: torch.Tensor, goal: torch.Tensor | None, goal_dim: int) -> torch.Tensor:
    """z = [feat ; goal] (goal_dim = 0: the visual feature alone)."""
    if goal_dim == 0:
        return feat
    if goal is None or goal.shape != (feat.shape[0], goal_dim):
        got = None if goal is None else list(goal.shape)
        want = [feat.shape[0], goal_dim]
        raise ValueError(f"the image bottleneck needs the goal embedding {want}, got {got}")
    return torch.cat([feat, goal.to(feat.dtype)], dim=-1)


class CodebookBottleneck(nn.Module):
    """feat [N, feat_dim] (+ goal [N, goal_dim]) -> token [N, width] through a convex mix of K codes."""

    def __init__(self, feat_dim: int, goal_dim: int, width: int, cfg: CodebookConfig) -> None:
        super().__init__()
        self.cfg, self.goal_dim = cfg, int(goal_dim)
        self.indexer = nn.Sequential(nn.ReLU(), nn.Linear(feat_dim + self.goal_dim, cfg.size))
        self.codes = nn.Parameter(torch.randn(cfg.size, cfg.code_dim))
        self.up = nn.Linear(cfg.code_dim, width)
        self.stats: dict[str, torch.Tensor] = {}  # of the last forward: probs [N, K] before dropout

    def code_weights(self, feat: torch.Tensor, goal: torch.Tensor | None = None) -> torch.Tensor:
        """P [N, K]: the weight of each code (dropout applied while training)."""
        cfg = self.cfg
        scores = self.indexer(fuse(feat, goal, self.goal_dim)) / cfg.temperature
        if cfg.indexing == "softmax":
            probs = scores.softmax(dim=-1)
        elif cfg.indexing == "topk_softmax":
            top, ids = scores.topk(cfg.topk, dim=-1)
            probs = torch.zeros_like(scores).scatter(-1, ids, top.softmax(dim=-1))
        elif self.training:  # gumbel: one-hot forward, Gumbel-softmax gradient (straight-through)
            probs = F.gumbel_softmax(scores, tau=1.0, hard=True, dim=-1)
        else:
            probs = F.one_hot(scores.argmax(dim=-1), cfg.size).to(scores.dtype)
        self.stats = {"probs": probs.detach()}
        if cfg.indexing != "gumbel" and cfg.dropout > 0:
            probs = F.dropout(probs, cfg.dropout, self.training)
        return probs

    def forward(self, feat: torch.Tensor, goal: torch.Tensor | None = None) -> torch.Tensor:
        probs = self.code_weights(feat, goal)
        return self.up(probs @ self.codes.to(probs.dtype))

    def usage_metrics(self) -> dict[str, torch.Tensor]:
        """entropy, perplexity, dead_codes of the last forward (see the module doc); {} before any."""
        if "probs" not in self.stats:
            return {}
        p = self.stats["probs"].float()
        mean = p.mean(dim=0)
        entropy = -(p * p.clamp_min(1e-12).log()).sum(dim=-1).mean()
        usage_entropy = -(mean * mean.clamp_min(1e-12).log()).sum()
        dead = (mean < DEAD_CODE_SHARE / p.shape[-1]).sum().float()
        return {"entropy": entropy, "perplexity": usage_entropy.exp(), "dead_codes": dead}


class LinearBottleneck(nn.Module):
    """The control: feat (+ goal) -> Linear(ReLU(z)) to code_dim -> Linear up to width. No codes."""

    def __init__(self, feat_dim: int, goal_dim: int, width: int, cfg: CodebookConfig) -> None:
        super().__init__()
        self.goal_dim = int(goal_dim)
        self.down = nn.Sequential(nn.ReLU(), nn.Linear(feat_dim + self.goal_dim, cfg.code_dim))
        self.up = nn.Linear(cfg.code_dim, width)

    def forward(self, feat: torch.Tensor, goal: torch.Tensor | None = None) -> torch.Tensor:
        return self.up(self.down(fuse(feat, goal, self.goal_dim)))

    def usage_metrics(self) -> dict[str, torch.Tensor]:
        return {}


def make_bottleneck(cfg: CodebookConfig, feat_dim: int, goal_dim: int, width: int) -> nn.Module | None:
    """The bottleneck `cfg.kind` names, or None for kind=none."""
    if cfg.kind == "codebook":
        return CodebookBottleneck(feat_dim, goal_dim, width, cfg)
    if cfg.kind == "linear":
        return LinearBottleneck(feat_dim, goal_dim, width, cfg)
    return None
