"""Compiled and CUDA-graph sampling for the transformer denoiser (`policy.compile`, inference only).

  step   torch.compile of one denoiser call (DiffusionTransformer.body) with the routing of the step as
         tensor inputs: one graph for every step of every chunk (the table's views differ only in offset)
  loop   torch.compile of the whole sampling loop (EDM.integrate, steps unrolled) with the routing table
         [S, L, k] as an input; the σ schedule and the sampler are constants of the graph
  graph  CUDA only: the eager loop captured once per (shapes, schedule, weights' storage) in a CUDA graph
         and replayed; noise, conditioning and routing table are copied into its static inputs first

What stays outside every compiled region: the observation encoder (once per chunk), drawing the noise
(the generator) and planning the routing table (a few small ops, rebuilt every chunk, so that it follows
the current weights). The expert MLP stays one opaque custom op (kernels.cached_moe_mlp), so compiled
code reads the chosen experts in place and runs the kernel variant recorded for the shape.

Dynamo keeps its compiled graphs per code object, so all nets of a process share one cache of
`body` (and one of the loop): each new model structure, precision or batch size is another entry, and
past torch._dynamo.config.recompile_limit (8) further ones run eagerly with a warning. One policy per
process stays far below it; benchmarks/inference.py, which builds many, raises the limit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def _cache(net: nn.Module) -> dict:
    """Per-net store of compiled callables. A deepcopy of the net (quantize_policy) carries the dict but
    not its owner's id, so the copy rebuilds its own instead of running the original's weights."""
    store = net.__dict__.get("_compiled_sampling")
    if store is None or store.get("owner") != id(net):
        store = {"owner": id(net)}
        net.__dict__["_compiled_sampling"] = store
    return store


def compiled_body(net: nn.Module) -> Callable:
    """compile=step: DiffusionTransformer.body compiled once per net."""
    store = _cache(net)
    if "step" not in store:
        store["step"] = torch.compile(net.body)
    return store["step"]


def _table_tensors(routes: Any) -> tuple[torch.Tensor | None, torch.Tensor | None, list | None]:
    """The planned routing as (ids [S, L, k], weights [S, L, k], None), or (None, None, windows) for DTR's
    Python-int windows, or all None (no cache: the network routes itself)."""
    if routes is None:
        return None, None, None
    if hasattr(routes, "ids"):
        return routes.ids, routes.weights, None
    first = routes[0][0]
    if isinstance(first, tuple) and isinstance(first[0], torch.Tensor):  # a plain list of (ids, weights)
        ids = torch.stack([torch.stack([r[0] for r in step]) for step in routes])
        return ids, torch.stack([torch.stack([r[1] for r in step]) for step in routes]), None
    return None, None, routes


def _step_routes(ids, weights, windows, step: int) -> list | None:
    if ids is not None:
        return list(zip(ids[step].unbind(0), weights[step].unbind(0)))
    return None if windows is None else windows[step]


def _loop_fn(net: nn.Module, edm: Any, sigmas: list[float], sampler: str) -> Callable:
    """x, cond, ids, weights, windows -> x0: EDM's loop over net.body with the given routing table."""

    def loop(x, cond, ids, weights, windows):
        def denoiser(x_in, c_noise, cond_, step=None):
            return net.body(x_in, c_noise, cond_, _step_routes(ids, weights, windows, step))

        return edm.integrate(denoiser, x, cond, sigmas, sampler)

    return loop


def run_chunk(net: nn.Module, edm: Any, x: torch.Tensor, cond: torch.Tensor, sigmas: list[float],
              sampler: str) -> torch.Tensor:
    """Sampling loop of one chunk under compile=loop|graph (called inside net.sampling(sigmas))."""
    ids, weights, windows = _table_tensors(net._routes)
    if net.compile == "loop":
        store = _cache(net)
        key = ("loop", tuple(sigmas), sampler)
        if key not in store:
            store[key] = torch.compile(_loop_fn(net, edm, sigmas, sampler))
        return store[key](x, cond, ids, weights, windows)
    return _graph_replay(net, edm, x, cond, sigmas, sampler, ids, weights, windows)


class _CapturedChunk:
    """One CUDA graph of the eager sampling loop with static input and output buffers."""

    def __init__(self, loop: Callable, x, cond, ids, weights, windows) -> None:
        self.inputs = [t.clone() if t is not None else None for t in (x, cond, ids, weights)]
        args = (*self.inputs, windows)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the capture: Triton compiles, allocator settles
            for _ in range(2):
                loop(*args)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = loop(*args)

    def __call__(self, x, cond, ids, weights) -> torch.Tensor:
        for static, new in zip(self.inputs, (x, cond, ids, weights)):
            if static is not None:
                static.copy_(new)
        self.graph.replay()
        return self.out.clone()


def _graph_replay(net, edm, x, cond, sigmas, sampler, ids, weights, windows) -> torch.Tensor:
    if not x.is_cuda:
        raise RuntimeError("policy.compile=graph captures CUDA graphs and needs the policy on a CUDA device; "
                           "on the CPU use compile=step or compile=loop")
    if ids is None and windows is None and any(True for _ in net.sparse_layers()):
        raise RuntimeError("policy.compile=graph needs expert_cache=true: per-sample routing is not "
                           "captured in a CUDA graph")
    # The graph reads weights by address: a key on their storage re-captures after .to() or a new load
    # into fresh tensors (load_state_dict copies in place and keeps the graph valid).
    storage = tuple(t.data_ptr() for t in (*net.parameters(), *net.buffers()))
    shapes = tuple(None if t is None else (tuple(t.shape), t.dtype) for t in (x, cond, ids, weights))
    key = ("graph", shapes, tuple(sigmas), sampler, None if windows is None else str(windows), storage)
    store = _cache(net)
    if key not in store:
        for old in [k for k in store if isinstance(k, tuple) and k[0] == "graph"]:
            del store[old]  # one captured chunk per net: graphs hold their own memory pool
        store[key] = _CapturedChunk(_loop_fn(net, edm, sigmas, sampler), x, cond, ids, weights, windows)
    return store[key](x, cond, ids, weights)
