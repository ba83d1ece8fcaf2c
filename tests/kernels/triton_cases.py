"""Triton kernels against their PyTorch twins. Not collected by the normal session (no test_ prefix):

- on CPU, tests/kernels/test_triton_interpreter.py runs this file in a child pytest with
  TRITON_INTERPRET=1 (which must precede the first `import triton`), fp32/fp16 only;
- on a GPU machine, benchmarks/gpu_check.sh runs it with KERNELS_TEST_DEVICE=cuda: real compiled
  kernels, fp32/fp16/bf16, the GPU block sizes, plus a CUDA-graph capture of the cached op.
"""

from __future__ import annotations

import os

import pytest
import torch

DEVICE = os.environ.get("KERNELS_TEST_DEVICE", "cpu")
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("run through test_triton_interpreter.py (needs TRITON_INTERPRET=1)", allow_module_level=True)
if DEVICE == "cuda" and not torch.cuda.is_available():
    pytest.skip("KERNELS_TEST_DEVICE=cuda but no GPU", allow_module_level=True)

from kernels.reference import cached_moe_mlp_reference, moe_mlp_reference  # noqa: E402
from kernels.triton_moe import cached_moe_mlp_triton, moe_mlp_triton, sort_routes  # noqa: E402

torch.set_num_threads(1)
# bf16 is silently wrong in the interpreter; tolerances are relative to the largest magnitude.
DTYPES = {torch.float32: 2e-4, torch.float16: 2e-2}
if DEVICE == "cuda":
    DTYPES[torch.bfloat16] = 4e-2
    torch.backends.cuda.matmul.allow_tf32 = False


def _routing(b: int, n_exp: int, k: int, gen: torch.Generator, skip: int | None) -> torch.Tensor:
    """Distinct experts per sample, never `skip` (so that one expert gets no samples)."""
    allowed = [e for e in range(n_exp) if e != skip]
    rows = [torch.tensor(allowed)[torch.randperm(len(allowed), generator=gen)[:k]] for _ in range(b)]
    return torch.stack(rows).to(DEVICE)


def _problem(b, t, d, h, n_exp, k, dtype, skip=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, d, generator=gen)
    w13 = torch.randn(n_exp, 2 * h, d, generator=gen) / d**0.5
    w2 = torch.randn(n_exp, d, h, generator=gen) / h**0.5
    ids = _routing(b, n_exp, k, gen, skip)
    weights = torch.rand(b, k, generator=gen) + 0.1
    weights = weights / weights.sum(dim=1, keepdim=True)
    cast = [v.to(DEVICE, dtype) for v in (x, w13, w2)]
    return cast[0], cast[1], cast[2], ids, weights.to(DEVICE)


def _run(fn, x, w13, w2, ids, weights, gy):
    leaves = [v.detach().clone().requires_grad_() for v in (x, w13, w2, weights)]
    out = fn(leaves[0], leaves[1], leaves[2], ids, leaves[3])
    out.backward(gy)
    return [out] + [v.grad for v in leaves]


def _assert_close(got, want, tol, what):
    err = (got.float() - want.float()).abs().max().item()
    scale = want.float().abs().max().item() + 1e-6
    assert err <= tol * scale, f"{what}: max error {err:.3g} vs scale {scale:.3g} (tol {tol})"


def test_sort_routes_is_a_stable_counting_sort():
    ids = torch.tensor([[2, 0], [0, 2], [3, 0], [2, 3], [0, 3]], device=DEVICE)  # expert 1 empty
    perm, pos, seg = sort_routes(ids, 4)
    flat = ids.reshape(-1).cpu()
    assert perm.cpu().long().tolist() == torch.argsort(flat, stable=True).tolist()
    assert torch.equal(perm.cpu().long()[pos.cpu().long()], torch.arange(flat.numel()))
    counts = torch.bincount(flat, minlength=4)
    assert seg.cpu().tolist() == [0] + torch.cumsum(counts, 0).tolist()


# (B, T, d, h, E, k, skipped expert): T < 16, T > 16, k = 1 and 2, an expert with no samples,
# sizes that are not multiples of any block.
CASES = [(5, 3, 40, 24, 4, 2, 1), (4, 13, 24, 40, 3, 1, None), (3, 17, 16, 16, 2, 2, None)]
if DEVICE == "cuda":
    CASES += [(37, 10, 200, 136, 5, 2, 3), (64, 16, 256, 512, 8, 2, None)]


@pytest.mark.parametrize("dtype", list(DTYPES), ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "B{}-T{}-d{}-h{}-E{}-k{}".format(*c[:6]))
def test_moe_mlp_forward_and_grads_match_reference(case, dtype):
    b, t, d, h, n_exp, k, skip = case
    x, w13, w2, ids, weights = _problem(b, t, d, h, n_exp, k, dtype, skip)
    gy = torch.randn(b, t, d, generator=torch.Generator().manual_seed(1)).to(DEVICE, dtype)
    got = _run(moe_mlp_triton, x, w13, w2, ids, weights, gy)
    # The twin runs in fp32 on the same (rounded) inputs: the kernels accumulate in fp32 too.
    want = _run(moe_mlp_reference, x.float(), w13.float(), w2.float(), ids, weights, gy.float())
    for name, g, w in zip(["out", "dx", "dw13", "dw2", "dweights"], got, want):
        assert g.dtype == (weights.dtype if name == "dweights" else dtype), name
        _assert_close(g, w, DTYPES[dtype], name)


def test_no_grad_forward_and_determinism():
    x, w13, w2, ids, weights = _problem(6, 5, 24, 32, 4, 2, torch.float32, skip=2, seed=3)
    with torch.no_grad():
        plain = moe_mlp_triton(x, w13, w2, ids, weights)
    _assert_close(plain, moe_mlp_reference(x, w13, w2, ids, weights), 2e-4, "no-grad out")
    gy = torch.randn_like(plain)
    first = _run(moe_mlp_triton, x, w13, w2, ids, weights, gy)
    second = _run(moe_mlp_triton, x, w13, w2, ids, weights, gy)
    assert torch.equal(first[0], plain)
    for a, b in zip(first, second):
        assert torch.equal(a, b)  # no atomics anywhere: bitwise repeatable


@pytest.mark.parametrize("dtype", list(DTYPES), ids=str)
@pytest.mark.parametrize("m,k", [(7, 1), (20, 2)] + ([(64, 2), (10, 2)] if DEVICE == "cuda" else []))
def test_cached_moe_mlp_matches_reference(m, k, dtype):
    d, h, n_exp = (40, 24, 4) if DEVICE == "cpu" else (200, 136, 6)
    gen = torch.Generator().manual_seed(m)
    x = torch.randn(m, d, generator=gen).to(DEVICE, dtype)
    w13 = (torch.randn(n_exp, 2 * h, d, generator=gen) / d**0.5).to(DEVICE, dtype)
    w2 = (torch.randn(n_exp, d, h, generator=gen) / h**0.5).to(DEVICE, dtype)
    ids = torch.tensor([3, 0][:k], device=DEVICE)
    weights = torch.tensor([0.7, 0.3][:k], device=DEVICE)
    got = cached_moe_mlp_triton(x, w13, w2, ids, weights)
    want = cached_moe_mlp_reference(x.float(), w13.float(), w2.float(), ids, weights)
    assert got.dtype == dtype
    _assert_close(got, want, DTYPES[dtype], "cached out")


@pytest.mark.skipif(DEVICE != "cuda", reason="CUDA graphs need a GPU")
def test_cached_moe_mlp_replays_in_a_cuda_graph():
    x = torch.randn(16, 128, device="cuda", dtype=torch.bfloat16)
    w13 = torch.randn(4, 256, 128, device="cuda", dtype=torch.bfloat16) / 12
    w2 = torch.randn(4, 128, 128, device="cuda", dtype=torch.bfloat16) / 12
    ids = torch.tensor([1, 2], device="cuda")
    weights = torch.tensor([0.6, 0.4], device="cuda")
    cached_moe_mlp_triton(x, w13, w2, ids, weights)  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = cached_moe_mlp_triton(x, w13, w2, ids, weights)
    ids.copy_(torch.tensor([3, 0], device="cuda"))  # new routing, same graph: read on the device
    weights.copy_(torch.tensor([0.25, 0.75], device="cuda"))
    graph.replay()
    want = cached_moe_mlp_reference(x.float(), w13.float(), w2.float(), ids, weights)
    _assert_close(out, want, 4e-2, "graph replay")


@pytest.mark.skipif(DEVICE != "cuda", reason="dispatch to Triton happens on CUDA tensors")
def test_public_ops_dispatch_to_triton_on_cuda_under_autocast(monkeypatch):
    from kernels import moe_mlp
    from kernels.moe import backend_for

    monkeypatch.delenv("KERNELS_BACKEND", raising=False)
    x, w13, w2, ids, weights = _problem(8, 10, 64, 96, 4, 2, torch.float32)
    assert backend_for(x) == "triton"
    leaves = [v.requires_grad_() for v in (x, w13, w2)]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = moe_mlp(leaves[0], leaves[1], leaves[2], ids, weights)
    assert out.dtype == torch.bfloat16
    out.float().square().sum().backward()
    assert all(v.grad is not None and v.grad.dtype == torch.float32 for v in leaves)
    want = moe_mlp_reference(x.detach(), w13.detach(), w2.detach(), ids, weights)
    _assert_close(out, want, 4e-2, "autocast")


@pytest.mark.skipif(DEVICE != "cpu", reason="forcing Triton on CPU tensors is the interpreter's case")
def test_env_var_forces_the_triton_backend_on_cpu(monkeypatch):
    from kernels import cached_moe_mlp, moe_mlp
    from kernels.moe import backend_for

    monkeypatch.setenv("KERNELS_BACKEND", "triton")
    x, w13, w2, ids, weights = _problem(3, 4, 24, 16, 3, 2, torch.float32)
    assert backend_for(x) == "triton"
    _assert_close(moe_mlp(x, w13, w2, ids, weights), moe_mlp_reference(x, w13, w2, ids, weights), 2e-4, "out")
    with torch.no_grad():
        got = cached_moe_mlp(x[0], w13, w2, ids[0], weights[0])
    _assert_close(got, cached_moe_mlp_reference(x[0], w13, w2, ids[0], weights[0]), 2e-4, "cached")
