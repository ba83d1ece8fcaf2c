"""The original MoDE transformer (Reuss et al.'s `modedit.py`) as a benchmark opponent.

Imported at run time from a local copy the user names (`--peer-mode-src DIR`: a checkout of the
authors' repository, or the folder holding modedit.py; it needs torch and einops). Nothing is
downloaded and nothing of it is stored in this project. It is built at our sizes and sampled by our own
EDM / DDIM loop (policies/diffusion.py EDM.integrate), so only the network differs. Its expert cache is
its own: `precompute_experts_for_inference` fuses the two chosen experts of every (layer, σ) into new
weight copies, once per schedule (the authors build it at the start of a rollout), and the forward looks
the copy up by the float key `c.mean().item()`.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from benchmarks.common import Recorder
from benchmarks.inference_cases import Case, available_mb, device_mem_mb
from policies.diffusion import EDM


def load_modedit(src: str | Path) -> ModuleType:
    root = Path(src).expanduser()
    for path in (root / "modedit.py", root / "mode" / "models" / "networks" / "modedit.py"):
        if path.is_file():
            spec = importlib.util.spec_from_file_location("peer_modedit", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise FileNotFoundError(f"--peer-mode-src {src}: no modedit.py in that folder or in its "
                            "mode/models/networks/; pass a local checkout of the original MoDE code")


class PeerMoDE:
    """MoDeDiT at a given size with our token count: [σ, goal x g, state, actions x T], g chosen so that
    the sequence is as long as ours. `sample(obs, goal)` -> x0 [B, T, Da] (normalized action space)."""

    def __init__(self, modedit: ModuleType, edm: EDM, width: int, n_layers: int, n_heads: int,
                 num_experts: int, top_k: int, obs_dim: int, action_dim: int, horizon: int, n_tokens: int,
                 device: str = "cpu") -> None:
        self.goal_tokens = n_tokens - 2 - horizon
        if self.goal_tokens < 1:
            raise ValueError(f"{n_tokens} tokens cannot hold σ, goal, state and {horizon} actions")
        self.net = modedit.MoDeDiT(
            obs_dim=obs_dim, goal_dim=width, device=device, goal_conditioned=True, action_dim=action_dim,
            embed_dim=width, embed_pdrob=0.0, attn_pdrop=0.0, n_layers=n_layers, n_heads=n_heads,
            goal_seq_len=self.goal_tokens, obs_seq_len=1, action_seq_len=horizon, state_dim=obs_dim,
            mlp_pdrop=0.0, goal_drop=0.0, num_experts=num_experts, top_k=top_k, causal=True,
            use_noise_token_as_input=True,
        ).to(device).eval()
        self.edm, self.width, self.obs_dim = edm, width, obs_dim
        self.action_dim, self.horizon, self.device = action_dim, horizon, device
        self.sigmas = edm.sigmas()
        self.cached = True

    def inputs(self, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        states = torch.randn(batch, 1, self.obs_dim, generator=g).to(self.device)
        return states, torch.randn(batch, self.goal_tokens, self.width, generator=g).to(self.device)

    @torch.no_grad()
    def build_cache(self) -> None:
        """The authors' precompute: one fused copy of the chosen experts per (layer, σ of the schedule)."""
        self.net.reset_all_caches()
        for s in self.sigmas[:-1]:
            self.net.precompute_experts_for_inference(torch.tensor(s, device=self.device))

    def cache_bytes(self) -> int:
        """Bytes held by the fused expert copies (the modules it wraps are the experts themselves)."""
        total = 0
        for block in self.net.blocks:
            for fused in block.fused_experts.values():
                for p in (fused.w1.weight, fused.w1.bias, fused.w2.weight):
                    total += p.numel() * p.element_size()
        return total

    def block_weight_bytes(self) -> int:
        """Weight bytes one denoiser call reads in the blocks: attention + the k chosen experts."""
        total = 0
        for block in self.net.blocks:
            total += sum(p.numel() * p.element_size() for p in block.attn.parameters())
            experts = list(block.experts.values())
            per = sum(p.numel() * p.element_size() for p in experts[0].parameters())
            total += per * min(self.net.top_k, len(experts))
        return total

    @torch.no_grad()
    def sample(self, states: torch.Tensor, goals: torch.Tensor,
               generator: torch.Generator | None = None) -> torch.Tensor:
        batch = states.shape[0]
        saved = [b.fused_experts for b in self.net.blocks]
        if not self.cached:  # uncached: an empty cache makes every block route its tokens
            for b in self.net.blocks:
                b.fused_experts = {}
        try:
            x = torch.randn(batch, self.horizon, self.action_dim, device=self.device,
                            generator=generator) * self.sigmas[0]

            def denoiser(x_in, c_noise, cond, step=None):  # the exact σ: the cache key depends on it
                sigma = torch.full((batch,), self.sigmas[step], device=self.device)
                return self.net({"state_images": states}, x_in, goals, sigma)

            return self.edm.integrate(denoiser, x, None, self.sigmas, "ddim")
        finally:
            for b, f in zip(self.net.blocks, saved):
                b.fused_experts = f


def cache_hit_rate(peer: PeerMoDE, states: torch.Tensor, goals: torch.Tensor) -> float:
    """Fraction of block calls in one cached chunk that found their fused experts (the float key of the
    batch's embedding mean must equal the one computed at build time)."""
    calls = {"hit": 0, "all": 0}

    def count(module: nn.Module, *_):
        calls["all"] += 1

    def hit(module: nn.Module, *_):
        calls["hit"] += 1

    hooks = [b.register_forward_hook(count) for b in peer.net.blocks]
    for b in peer.net.blocks:
        for fused in b.fused_experts.values():
            hooks.append(fused.register_forward_hook(hit))
    try:
        peer.sample(states, goals)
    finally:
        for h in hooks:
            h.remove()
    return calls["hit"] / max(1, calls["all"])


def peer_cache_mb(mode) -> float:
    """What the original's cache will hold: k fused experts (fp32, with biases) per (layer, σ)."""
    c = mode.cfg
    expert = 3 * c.width * c.expert_hidden + 2 * c.expert_hidden
    return c.top_k * expert * 4 * c.n_layers * c.num_sampling_steps / 2**20


def build_peer(args, size: str, mode, device: str, rec: Recorder, ctx: dict):
    """The original transformer at this size with its cache built (once), or None when it cannot run."""
    cfg = mode.cfg
    if cfg.expert_hidden != 4 * cfg.width:
        print(f"# peer skipped at size {size}: the original's experts have hidden 4 x width, "
              f"not {cfg.expert_hidden}", flush=True)
        return None
    # its weights (about ours: the same experts and attention) + its cache, with 2 GB to spare
    need = peer_cache_mb(mode) + sum(p.numel() for p in mode.parameters()) * 4 / 2**20
    if need > available_mb(device) - 2048:
        print(f"# peer skipped at size {size}: it needs ~{need / 1024:.1f} GB (its cache ~"
              f"{peer_cache_mb(mode) / 1024:.1f} GB), {available_mb(device) / 1024:.1f} GB available", flush=True)
        return None
    torch.manual_seed(0)
    obs_dim = sum(m["shape"][0] for m in mode.shape_meta["obs"].values())
    peer = PeerMoDE(load_modedit(args.peer_mode_src), mode.edm, cfg.width, cfg.n_layers, cfg.n_heads,
                    cfg.num_experts, cfg.top_k, obs_dim, mode.action_dim, cfg.horizon, mode.net.pos.shape[1],
                    device)
    t0, before = time.perf_counter(), device_mem_mb(device)
    peer.build_cache()
    rec.emit("peer-cached", "cache_build_s", time.perf_counter() - t0, "s", **ctx)
    rec.emit("peer-cached", "cache_mb", peer.cache_bytes() / 2**20, "MB", **ctx)
    rec.emit("peer-cached", "mem_growth_mb", device_mem_mb(device) - before, "MB", **ctx)
    return peer


def peer_cases(peer, batch: int, device: str, rec: Recorder, ctx: dict) -> list[Case]:
    """The original's cached and uncached chunks at one batch, checked against each other."""
    states, goals = peer.inputs(batch)
    rec.emit(f"peer-cached-b{batch}", "cache_hit_rate", cache_hit_rate(peer, states, goals), "", **ctx)
    out = []
    for name, cached in (("peer-cached", True), ("peer-uncached", False)):
        def run(generator=None, cached=cached):
            peer.cached = cached
            return peer.sample(states, goals, generator)
        out.append(Case(name, run, None, peer.block_weight_bytes()))
    gen = torch.Generator(device=device)
    a, b = (c.run(gen.manual_seed(0)) for c in out)
    if not torch.allclose(a, b, rtol=1e-4, atol=1e-4):
        raise RuntimeError(f"the original's cached and uncached chunks disagree by {(a - b).abs().max().item()}")
    return out
