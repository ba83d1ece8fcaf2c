"""MoDE: Mixture of Denoising Experts (Reuss et al., 2024) -- the whole model, top to bottom.

Tokens  [σ-token, goal token, obs tokens (To per state group / camera), action tokens (T)] + learned
        positions; the σ-token is the noise embedding c of c_noise = ln(σ)/4.
Block   h = x + Attn(RMSNorm(x) + c)       c added to every attention input; QK-norm; optional causal
        h = h + MoE(RMSNorm(h))            E SwiGLU experts, top-k per sample, chosen by a router that
                                           sees ONLY c (softmax -> top-k -> renormalized: the same
                                           deterministic top-k while training and at inference; with
                                           sample_routes=true, the paper's choice, training draws the
                                           k experts from the softmax without replacement instead)
Out     RMSNorm -> Linear on the action tokens = F of EDM (policies/diffusion.py).

Expert caching. Routing depends on σ alone, and σ is shared by the batch at inference, so the experts
of every (sampling step, layer) are known before sampling starts. `DiffusionTransformer.sampling`
computes them for the whole schedule (one router pass per layer over all steps, one route call); each
sampling step then looks its routing up by the integer step index, skips the router and runs only its
k experts for the whole batch through kernels.cached_moe_mlp, which gets the stacked expert weights and
the routing as device tensors (on CUDA no host sync, no .item(); on the CPU the kernel reads the ids on
the host, where that costs nothing, and runs the experts on their weights in place). The table lives for
one sampling call, so it can never be stale: it is rebuilt from the current weights every chunk (a few
small ops) rather than keyed on parameter versions, which miss `p.data.copy_` (how Lightning's
WeightAveraging swaps EMA weights in and out). `compile=step|loop|graph` compiles the denoiser call or
the whole loop, or replays a CUDA graph of it (policies/compiled_sampling.py); policies/quantize.py
gives bf16 / int8 copies of a policy.

The expert weights are stacked, w13 [E, 2h, d] (gate rows then up rows) and w2 [E, d, h], the layout of
kernels/. The same transformer with a dense SwiGLU per block is the DiT baseline (policies/dit.py).

Options. router=dtr replaces the learned router by Denoising Task Routing (policies/routing_dtr.py): one
SwiGLU of E*h units per block whose σ-chosen window of units is active, cached at inference the same
way. codebook.kind=codebook|linear puts a bottleneck on the image tokens (policies/encoders/codebook.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

import kernels
from data.normalize import Normalizer
from policies.base import register_policy
from policies.diffusion import DiffusionConfig, DiffusionPolicy, NoiseEmbedding
from policies.encoders.codebook import CodebookConfig
from policies.encoders.goal import GoalEncoder
from policies.encoders.obs import ObsEncoder
from policies.encoders.resnet import ResNetConfig
from policies.routing_dtr import DTRMLP, DTRSchedule

ATTENTION = ("sdpa", "explicit")
COMPILE_MODES = ("none", "step", "loop", "graph")
ROUTERS = ("learned", "dtr")


@dataclass
class TransformerConfig(DiffusionConfig):
    width: int = 128
    n_layers: int = 4
    n_heads: int = 4
    causal: bool = False
    qk_norm: bool = True
    attention: str = "sdpa"  # sdpa | explicit softmax(QKᵀ)V (SDPA measured faster on CPU too, torch 2.13)
    dropout: float = 0.0  # attention probabilities and residual branches
    goal_dropout: float = 0.0  # training: zero the goal embedding of this fraction of samples
    state_hidden: int = 128  # hidden size of the per-group state MLPs
    state_grouping: str = "joint"  # joint: one token per frame for all state keys | per_key
    image_film: bool = True  # FiLM the image encoders with the goal embedding
    image_encoder: dict = field(default_factory=lambda: ResNetConfig().to_dict())  # encoders/resnet.ResNetConfig
    codebook: dict = field(default_factory=lambda: CodebookConfig().to_dict())  # encoders/codebook.CodebookConfig
    compile: str = "none"  # inference: none | step (torch.compile the denoiser call) | loop (the whole
    # sampling loop) | graph (CUDA only: capture the chunk in a CUDA graph); policies/compiled_sampling.py

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"unknown compile {self.compile!r}; choose one of {', '.join(COMPILE_MODES)}")
        if self.width % self.n_heads:
            raise ValueError(f"width {self.width} must be divisible by n_heads {self.n_heads}")
        if self.attention not in ATTENTION:
            raise ValueError(f"unknown attention {self.attention!r}; choose one of {', '.join(ATTENTION)}")


@dataclass
class MoDEConfig(TransformerConfig):
    num_experts: int = 4
    top_k: int = 2
    expert_hidden: int = 256  # SwiGLU hidden size of each expert
    router_hidden: int = 64  # router MLP hidden size (0: a single linear layer)
    shared_expert: bool = False  # add a dense SwiGLU expert that every sample uses
    lb_weight: float = 0.01  # load-balancing loss weight
    z_loss_weight: float = 0.0  # router z-loss weight
    sample_routes: bool = False  # training: False trains on the deterministic top-k that inference runs, so
    # each σ trains the experts it will use; True draws the k experts from the router's softmax (the paper's
    # choice), which left the router uniform in our CPU runs (docs/policies.md: Routing while training)
    expert_cache: bool = True  # precompute the routing of every sampling step (exact; faster)
    router: str = "learned"  # learned: top-k of E experts by a router on σ | dtr: Denoising Task Routing
    dtr_sharing_ratio: float = 0.8  # dtr: fraction β of the E*h hidden units active at every σ
    dtr_alpha: float = 4.0  # dtr: window start = round(F(σ)^α (1 - β) E h)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.top_k <= self.num_experts:
            raise ValueError(f"top_k ({self.top_k}) must be between 1 and num_experts ({self.num_experts})")
        if self.router not in ROUTERS:
            raise ValueError(f"unknown router {self.router!r}; choose one of {', '.join(ROUTERS)}")
        if self.router == "dtr" and self.shared_expert:
            raise ValueError("shared_expert is an option of the learned router; with router=dtr the shared "
                             "units are set by dtr_sharing_ratio")


# --- building blocks -------------------------------------------------------------------------
class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig, n_tokens: int) -> None:
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.width // cfg.n_heads
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width, bias=False)
        self.proj = nn.Linear(cfg.width, cfg.width, bias=False)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if cfg.qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if cfg.qk_norm else nn.Identity()
        self.causal, self.dropout, self.impl = cfg.causal, cfg.dropout, cfg.attention
        self.register_buffer("future", torch.ones(n_tokens, n_tokens).triu(1).bool(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        p_drop = self.dropout if self.training else 0.0
        if self.impl == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p_drop, is_causal=self.causal)
        else:  # the same arithmetic written out (a reference, and for backends without a fused kernel)
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
            if self.causal:
                att = att.masked_fill(self.future[:n, :n], float("-inf"))
            att = F.dropout(att.softmax(dim=-1), p_drop) if p_drop else att.softmax(dim=-1)
            y = att @ v
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class SwiGLU(nn.Module):
    """Dense SwiGLU MLP in the experts' layout: w13 [2h, d] (gate rows, then up rows), w2 [d, h]."""

    def __init__(self, width: int, hidden: int, out_std: float = 0.02) -> None:
        super().__init__()
        self.w13 = nn.Parameter(torch.randn(2 * hidden, width) * 0.02)
        self.w2 = nn.Parameter(torch.randn(width, hidden) * out_std)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None, route: Any = None) -> torch.Tensor:
        gate, up = F.linear(x, self.w13).chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, self.w2)


def load_balancing_loss(probs_mean: torch.Tensor, load: torch.Tensor) -> torch.Tensor:
    """E · Σ_i mean_b(p_bi) · n_i/N: 1 when routing is uniform, up to E when it collapses onto one expert."""
    return probs_mean.shape[-1] * (probs_mean * load).sum(dim=-1)


class SparseMoE(nn.Module):
    """E SwiGLU experts stacked as w13 [E, 2h, d], w2 [E, d, h]; a router on the noise embedding only."""

    def __init__(self, cfg: MoDEConfig, out_std: float) -> None:
        super().__init__()
        d, h, e = cfg.width, cfg.expert_hidden, cfg.num_experts
        self.top_k, self.sample_routes = cfg.top_k, cfg.sample_routes
        self.w13 = nn.Parameter(torch.randn(e, 2 * h, d) * 0.02)
        self.w2 = nn.Parameter(torch.randn(e, d, h) * out_std)
        rh = cfg.router_hidden
        layers = [nn.Linear(d, rh), nn.SiLU(), nn.Linear(rh, e)] if rh > 0 else [nn.Linear(d, e)]
        self.router = nn.Sequential(*layers)
        self.shared = SwiGLU(d, h, out_std) if cfg.shared_expert else None
        self.stats: dict[str, torch.Tensor] = {}  # of the last routed forward: probs_mean, load, logits

    def route(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.router(emb)
        ids, weights, stats = kernels.route(logits, self.top_k, training=self.training and self.sample_routes)
        self.stats = {**stats, "logits": logits}  # the losses are computed from these only when asked
        return ids, weights

    def forward(self, x: torch.Tensor, emb: torch.Tensor,
                route: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        if route is None:  # training / uncached: route each sample, then its k experts
            out = kernels.moe_mlp(x, self.w13, self.w2, *self.route(emb))
        else:  # cached sampling: one routing (ids [k], weights [k]) for every token of the batch
            out = kernels.cached_moe_mlp(x.reshape(-1, x.shape[-1]), self.w13, self.w2, *route).view_as(x)
        return out if self.shared is None else out + self.shared(x)


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig, n_tokens: int, mlp: nn.Module) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.RMSNorm(cfg.width, eps=1e-6), nn.RMSNorm(cfg.width, eps=1e-6)
        self.attn = Attention(cfg, n_tokens)
        self.mlp = mlp
        self.dropout = cfg.dropout

    def forward(self, h: torch.Tensor, emb: torch.Tensor, route: Any = None) -> torch.Tensor:
        a = self.attn(self.norm1(h) + emb[:, None])
        h = h + (F.dropout(a, self.dropout, self.training) if self.dropout else a)
        m = self.mlp(self.norm2(h), emb, route)
        return h + (F.dropout(m, self.dropout, self.training) if self.dropout else m)


# --- the denoiser network --------------------------------------------------------------------
class DiffusionTransformer(nn.Module):
    """net(x_in [B, T, Da], c_noise [B], cond [B, n_cond, d], step) -> F [B, T, Da]; `make_mlp(out_std)`
    builds each block's MLP (SparseMoE for MoDE, SwiGLU for the DiT baseline)."""

    def __init__(self, cfg: TransformerConfig, action_dim: int, n_cond_tokens: int,
                 make_mlp: Callable[[float], nn.Module], expert_cache: bool = False,
                 dtr: DTRSchedule | None = None) -> None:
        super().__init__()
        n_tokens = 1 + n_cond_tokens + cfg.horizon
        out_std = 0.02 / math.sqrt(2 * cfg.n_layers)  # residual-branch outputs scaled by depth (GPT-2)
        self.horizon = cfg.horizon
        self.noise_emb = NoiseEmbedding(cfg.width)
        self.action_in = nn.Linear(action_dim, cfg.width)
        self.pos = nn.Parameter(torch.randn(1, n_tokens, cfg.width) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg, n_tokens, make_mlp(out_std)) for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.width, eps=1e-6)
        self.head = nn.Linear(cfg.width, action_dim)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for block in self.blocks:
            nn.init.normal_(block.attn.proj.weight, std=out_std)
        nn.init.zeros_(self.head.weight)  # F starts at 0, i.e. D(x; σ) = c_skip x
        self.expert_cache = expert_cache
        self.dtr = dtr  # router=dtr: σ -> window of hidden units, the same in every block
        self.compile = cfg.compile  # inference only: see policies/compiled_sampling.py
        self._routes: list[list[Any]] | None = None

    def sparse_layers(self) -> list[SparseMoE]:
        return [b.mlp for b in self.blocks if isinstance(b.mlp, SparseMoE)]

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor,
                step: int | None = None) -> torch.Tensor:
        routes = self._routes[step] if self._routes is not None and step is not None else None
        if self.compile == "step" and not (self.training or torch.is_grad_enabled()):
            from policies.compiled_sampling import compiled_body

            return compiled_body(self)(x_in, c_noise, cond, routes)
        return self.body(x_in, c_noise, cond, routes)

    def body(self, x_in: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor,
             routes: list[Any] | None) -> torch.Tensor:
        """One denoiser call with the routing of every layer given (cached) or None (route here)."""
        emb = self.noise_emb(c_noise)
        h = torch.cat([emb[:, None], cond, self.action_in(x_in)], dim=1) + self.pos
        if routes is None and self.dtr is not None:  # DTR, uncached: each sample's σ masks its units
            routes = [self.dtr.masks(c_noise, h.dtype)] * len(self.blocks)
        for i, block in enumerate(self.blocks):
            h = block(h, emb, None if routes is None else routes[i])
        return self.head(self.norm(h[:, -self.horizon :]))

    def integrate(self, edm: Any, x: torch.Tensor, cond: torch.Tensor, sigmas: list[float],
                  sampler: str) -> torch.Tensor:
        """EDM's sampling loop (EDM.sample calls this inside `sampling`): compiled as a whole or replayed
        from a CUDA graph with compile=loop|graph, else EDM's own loop calling forward per step."""
        if self.compile in ("loop", "graph") and not (self.training or torch.is_grad_enabled()):
            from policies.compiled_sampling import run_chunk

            return run_chunk(self, edm, x, cond, sigmas, sampler)
        return edm.integrate(self, x, cond, sigmas, sampler)

    @contextmanager
    def sampling(self, sigmas: list[float]) -> Iterator[None]:
        """Inside: forward(step=i) runs the experts precomputed for σ_i (EDM.sample enters this)."""
        if not (self.expert_cache and (self.sparse_layers() or self.dtr is not None)):
            yield
            return
        self._routes = self.plan_routes(sigmas)
        try:
            yield
        finally:
            self._routes = None

    @torch.no_grad()
    def plan_routes(self, sigmas: list[float]) -> list[list[Any]]:
        """routes[step][layer] = (ids [k], weights [k]): the deterministic routing at σ_step, for every
        denoiser call of the schedule, from one router pass per layer and one route call in all; a
        RouteTable, whose .ids / .weights [S, L, k] hold the same as two tensors (the compiled loop's input).
        With DTR: (start, stop), the window of units at σ_step (Python ints), the same in every layer."""
        if self.dtr is not None:  # computed on the host: the windows are Python ints, no device sync
            windows = self.dtr.plan(torch.tensor(schedule_c_noise(sigmas), dtype=self.pos.dtype))
            return [[window] * len(self.blocks) for window in windows]
        moes = self.sparse_layers()
        if len(moes) != len(self.blocks):
            raise ValueError("expert caching needs a sparse MLP in every block")
        logits = self.router_logits(sigmas)  # [L, S, E]
        n_layers, n_steps, n_experts = logits.shape
        ids, weights, _ = kernels.route(logits.reshape(-1, n_experts), moes[0].top_k, training=False)

        return RouteTable(*(t.view(n_layers, n_steps, -1).transpose(0, 1).contiguous() for t in (ids, weights)))

    def router_logits(self, sigmas: list[float]) -> torch.Tensor:
        """[L, S, E]: every sparse layer's router logits at each σ > 0 of a sampling schedule (the whole
        routing of the policy, since the router sees σ alone)."""
        c_noise = torch.tensor(schedule_c_noise(sigmas), dtype=self.pos.dtype, device=self.pos.device)
        emb = self.noise_emb(c_noise)  # [S, d]
        return torch.stack([m.router(emb) for m in self.sparse_layers()])


def schedule_c_noise(sigmas: list[float]) -> list[float]:
    """The c_noise = ln(σ)/4 the sampler passes at each denoiser call of a schedule (σ = 0 ends it)."""
    return [math.log(s) / 4 for s in sigmas if s > 0]


class RouteTable(list):
    """The cached routing of one sampling call: table[step][layer] = (ids [k], weights [k]), views into
    .ids and .weights [S, L, k] (device tensors: reading them never syncs)."""

    def __init__(self, ids: torch.Tensor, weights: torch.Tensor) -> None:
        super().__init__([list(zip(i.unbind(0), w.unbind(0))) for i, w in zip(ids.unbind(0), weights.unbind(0))])
        self.ids, self.weights = ids, weights


# --- the policies ----------------------------------------------------------------------------
class TransformerPolicy(DiffusionPolicy):
    """Goal + observation tokens -> DiffusionTransformer -> EDM. Subclasses choose the block MLP."""

    config_cls: ClassVar[type[DiffusionConfig]] = TransformerConfig
    cfg: TransformerConfig

    def __init__(self, config: dict[str, Any], shape_meta: dict[str, Any], normalizer: Normalizer) -> None:
        super().__init__(config, shape_meta, normalizer)
        cfg = self.cfg
        self.goal_encoder = GoalEncoder.from_shape_meta(shape_meta, cfg.width, cfg.goal_dropout)
        self.obs_encoder = ObsEncoder(
            shape_meta, normalizer, cfg.width, cfg.n_obs_steps, cfg.state_hidden, cfg.state_grouping,
            cfg.image_encoder, film_dim=cfg.width if cfg.image_film else 0, codebook=cfg.codebook,
            goal_dim=cfg.width,
        )
        self.net = DiffusionTransformer(cfg, self.action_dim, 1 + self.obs_encoder.n_tokens, self.make_mlp,
                                        expert_cache=getattr(cfg, "expert_cache", False), dtr=self.make_dtr())

    def make_dtr(self) -> DTRSchedule | None:
        """The DTR schedule when the policy routes by DTR (MoDE's router=dtr), else None."""
        return None

    def make_mlp(self, out_std: float) -> nn.Module:
        raise NotImplementedError

    def encode(self, obs: dict[str, torch.Tensor], goal: dict[str, torch.Tensor]) -> torch.Tensor:
        """-> cond tokens [B, 1 + n_obs_tokens, width]: the goal token, then the observation tokens."""
        goal_emb = self.goal_encoder(goal)
        tokens = self.obs_encoder(obs, self.normalizer, goal_emb)
        return torch.cat([goal_emb[:, None].to(tokens.dtype), tokens], dim=1)

    def aux_loss(self) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """No extra loss; the code usage of the image codebooks (if any) as metrics."""
        return None, self.obs_encoder.filter_metrics()

    def param_counts(self) -> dict[str, int]:
        """Total parameters, and those one sample's forward uses (all but the unchosen experts, or the
        units outside the DTR window)."""
        total = sum(p.numel() for p in self.parameters())
        idle = sum((m.w13.shape[0] - m.top_k) * (m.w13[0].numel() + m.w2[0].numel())
                   for m in self.net.sparse_layers())
        if self.net.dtr is not None:
            idle += len(self.net.blocks) * 3 * self.cfg.width * (self.net.dtr.n_units - self.net.dtr.n_active)
        return {"params_total": total, "params_active": total - idle}


@register_policy("mode")
class MoDEPolicy(TransformerPolicy):
    config_cls = MoDEConfig
    cfg: MoDEConfig

    def make_mlp(self, out_std: float) -> nn.Module:
        if self.cfg.router == "dtr":
            return DTRMLP(self.cfg.width, self.cfg.num_experts * self.cfg.expert_hidden, out_std)
        return SparseMoE(self.cfg, out_std)

    def make_dtr(self) -> DTRSchedule | None:
        c = self.cfg
        if c.router != "dtr":
            return None
        return DTRSchedule(c.num_experts * c.expert_hidden, c.dtr_sharing_ratio, c.dtr_alpha,
                           c.train_sigma_loc, c.train_sigma_scale, c.train_sigma_min, c.train_sigma_max)

    def aux_loss(self) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """Load-balancing (+ z) loss averaged over layers, and per-layer expert load (tensors, no sync)."""
        _, metrics = super().aux_loss()  # image codebook usage, if any
        stats = [m.stats for m in self.net.sparse_layers()]
        if not stats or not stats[0]:
            return None, metrics
        lb = torch.stack([load_balancing_loss(s["probs_mean"], s["load"]) for s in stats]).mean()
        z = torch.stack([torch.logsumexp(s["logits"].float(), dim=-1).pow(2).mean() for s in stats]).mean()
        metrics = {**metrics, "lb_loss": lb.detach(), "router_z_loss": z.detach()}
        load = self.expert_usage()
        for layer in range(load.shape[0]):
            for expert in range(load.shape[1]):
                metrics[f"expert_load/l{layer}e{expert}"] = load[layer, expert]
        return self.cfg.lb_weight * lb + self.cfg.z_loss_weight * z, metrics

    def expert_usage(self) -> torch.Tensor:
        """[n_layers, E]: fraction of the routing assignments each expert got in the last routed forward."""
        return torch.stack([m.stats["load"] for m in self.net.sparse_layers()])
