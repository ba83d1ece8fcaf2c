"""What benchmarks/inference.py measures: the model sizes, the cases built at each, and the counters
(FLOPs, weight bytes read per chunk, cache bytes, memory growth) that say which limit a case is at."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

import kernels
from benchmarks.common import lift_state_setup
from policies.base import POLICY_REGISTRY, Policy
from policies.dit import dit_config_matching
from policies.quantize import LowPrecisionMoE

PAPER_PRESET = Path(__file__).resolve().parent.parent / "conf" / "policy" / "mode_paper.yaml"
# small: the comparison size, with the original's expert (4 x width) and router (2 x width) sizes
SMALL = {"width": 256, "n_layers": 4, "n_heads": 4, "num_experts": 4, "top_k": 2, "expert_hidden": 1024,
         "router_hidden": 512}


def size_config(size: str) -> dict[str, Any]:
    """MoDE config overrides of a named size (default: the dataclass defaults, the CPU preset)."""
    if size == "default":
        return {}
    if size == "small":
        return dict(SMALL)
    if size == "paper":
        preset = yaml.safe_load(PAPER_PRESET.read_text())
        return {k: v for k, v in preset.items() if k not in ("name", "defaults")}
    raise ValueError(f"unknown size {size!r}; choose default, small or paper")


# --- counters ------------------------------------------------------------------------------------
def _grouped_mm_flops(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * int(np.prod(out_shape)) * a_shape[-1]


def _int_mm_flops(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def _linear_dynamic_flops(x_shape, packed, *args, out_shape=None, **kwargs) -> int:
    return 2 * int(np.prod(x_shape)) * out_shape[-1]


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call; FlopCounterMode knows mm/bmm/attention, taught here the grouped and int8 GEMMs."""
    custom = {torch.ops.aten._int_mm: _int_mm_flops, torch.ops.quantized.linear_dynamic: _linear_dynamic_flops}
    if hasattr(torch.ops.aten, "_grouped_mm"):
        custom[torch.ops.aten._grouped_mm] = _grouped_mm_flops
    with FlopCounterMode(display=False, custom_mapping=custom) as counter:
        fn()
    return counter.get_total_flops()


def _bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def block_weight_bytes(policy: Policy) -> int:
    """Weight bytes one denoiser call reads in the blocks (attention + the MLP units it uses): what a
    batch-1 chunk has to stream from memory, step after step."""
    total = 0
    for block in policy.net.blocks:
        total += sum(_bytes(b) for b in [*block.attn.qkv.parameters(), *block.attn.qkv.buffers(),
                                         *block.attn.proj.parameters(), *block.attn.proj.buffers()])
        mlp = block.mlp
        tensors = [*mlp.parameters(recurse=False), *mlp.buffers(recurse=False)]
        sub = [t for name, m in mlp.named_children() if name != "router"
               for t in [*m.parameters(), *m.buffers()]]
        per_call = sum(_bytes(t) for t in tensors) + sum(_bytes(t) for t in sub)
        if hasattr(mlp, "top_k") and hasattr(mlp, "w13"):  # experts: k of E are read
            experts = sum(_bytes(t) for t in tensors if t.dim() >= 2 and t.shape[0] == mlp.w13.shape[0])
            per_call -= experts * (1 - mlp.top_k / mlp.w13.shape[0])
        total += per_call
    return int(total)


def available_mb(device: str = "cpu") -> float:
    """Free memory where tensors of `device` live: the GPU's, or the machine's MemAvailable, in MB."""
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info()[0] / 2**20
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def device_mem_mb(device: str) -> float:
    return torch.cuda.memory_allocated() / 2**20 if device.startswith("cuda") else rss_mb()


# --- the cases -----------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    run: Callable[..., torch.Tensor]  # run(generator=None): one chunk (batch fixed by the inputs)
    policy: Policy | None = None
    weight_bytes: int = 0  # per denoiser call
    extra: dict[str, float] = field(default_factory=dict)  # cache_mb, first_call_s, ...
    gemm: str = "fp32"  # the precision of the reference GEMM rate
    flops_of: str = ""  # compiled cases: FLOPs counted on this eager twin (a dispatch mode sees no inside)


def inputs(shape_meta: dict, batch: int, n_obs_steps: int, device: str) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(batch)
    obs = {k: torch.randn(batch, n_obs_steps, m["shape"][0], generator=g).to(device)
           for k, m in shape_meta["obs"].items()}
    return obs, {"task": torch.zeros(batch, dtype=torch.long, device=device)}


def _with(net: torch.nn.Module, fn: Callable[..., torch.Tensor], **attrs: Any) -> Callable[..., torch.Tensor]:
    """fn run with net's attributes set (expert_cache, compile), restored after: cases share weights."""

    def run(generator: torch.Generator | None = None) -> torch.Tensor:
        saved = {k: getattr(net, k) for k in attrs}
        for k, v in attrs.items():
            setattr(net, k, v)
        try:
            return fn(generator)
        finally:
            for k, v in saved.items():
                setattr(net, k, v)

    return run


def build_policies(size: str, device: str, names: tuple[str, ...] = ("mode", "dit", "cnn")) -> tuple[dict, dict]:
    """fp32 MoDE (with a trained-like head), the DiT with MoDE's active params and (default size only)
    the CNN, as far as `names` asks."""
    normalizer, shape_meta = lift_state_setup()
    mode_cfg = size_config(size)
    out: dict[str, Policy] = {}
    if "mode" in names:
        torch.manual_seed(0)
        out["mode"] = Policy.build("mode", mode_cfg, shape_meta, normalizer).eval()
        torch.nn.init.normal_(out["mode"].net.head.weight, std=0.02, generator=torch.Generator().manual_seed(1))
    if "dit" in names:
        torch.manual_seed(1)
        out["dit"] = Policy.build("dit", dit_config_matching(mode_cfg, "active"), shape_meta, normalizer).eval()
    if "cnn" in names and size == "default" and "cnn" in POLICY_REGISTRY:
        out["cnn"] = Policy.build("cnn", {}, shape_meta, normalizer).eval()
    return {k: p.to(device) for k, p in out.items()}, shape_meta


def policy_cases(policies: dict[str, Policy], obs: dict, goal: dict, compile_cases: list[str]) -> list[Case]:
    """Our cases at one batch: MoDE cached (eager, compiled, reduced precision), uncached, DiT, CNN.
    `policies` holds mode, dit, cnn (optional) and the quantized copies mode-bf16 / mode-int8."""
    mode = policies["mode"]
    net = mode.net

    def chunk(p: Policy) -> Callable[..., torch.Tensor]:
        return lambda generator=None: p.predict_action(obs, goal, generator=generator)

    cases = [Case("mode-cached", chunk(mode), mode, block_weight_bytes(mode)),
             Case("mode-uncached", _with(net, chunk(mode), expert_cache=False), mode, block_weight_bytes(mode))]
    for name in ("dit", "cnn"):
        if name in policies:
            cases.append(Case(name, chunk(policies[name]), policies[name], block_weight_bytes(policies[name])
                              if hasattr(policies[name].net, "blocks") else 0))
    for dtype in ("bf16", "int8"):
        q = policies.get(f"mode-{dtype}")
        if q is not None:
            cases.append(Case(f"mode-{dtype}", chunk(q), q, block_weight_bytes(q), gemm=dtype))
        if q is not None and dtype == "bf16" and "step" in compile_cases:
            cases.append(Case("mode-bf16-compiled-step", _with(q.net, chunk(q), compile="step"), q,
                              block_weight_bytes(q), gemm="bf16", flops_of="mode-bf16"))
    for mode_name in compile_cases:
        cases.append(Case(f"mode-compiled-{mode_name}", _with(net, chunk(mode), compile=mode_name), mode,
                          block_weight_bytes(mode), flops_of="mode-cached"))
    return cases


def first_call(case: Case, device: str, sync: Callable[[], None]) -> None:
    """Run a case once (compiles, packs, builds caches) and record its cost and memory growth."""
    before = device_mem_mb(device)
    t0 = time.perf_counter()
    case.run()
    sync()
    case.extra["first_call_s"] = time.perf_counter() - t0
    case.extra["mem_growth_mb"] = device_mem_mb(device) - before


def autotune_experts(policy: Policy, batch: int) -> dict[str, float]:
    """Record the fastest cached variant for this policy's expert shape at this batch (kernels/moe.py);
    returns the median ms per variant."""
    net = policy.net
    moes = net.sparse_layers()
    if not moes:
        return {}
    routes = net.plan_routes(policy.edm.sigmas())
    n_tokens = net.pos.shape[1]
    moe = moes[0]
    dtype = torch.bfloat16 if isinstance(moe, LowPrecisionMoE) and moe.fmt == "bf16" else net.pos.dtype
    if isinstance(moe, LowPrecisionMoE) and moe.fmt == "int8":
        return {}
    x = torch.randn(batch * n_tokens, moe.w13.shape[2], device=net.pos.device, dtype=dtype)
    times = kernels.autotune_cached(x, moe.w13, moe.w2, *routes[0][0])
    return {k: v * 1e3 for k, v in times.items()}
