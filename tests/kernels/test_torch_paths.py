"""The fast PyTorch paths equal the reference twins (forward and every gradient); the dispatcher."""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels.moe import backend_for
from kernels.reference import cached_moe_mlp_reference, moe_mlp_reference
from kernels.torch_moe import (
    cached_moe_mlp_gathered,
    cached_moe_mlp_torch,
    moe_mlp_dense,
    moe_mlp_grouped_mm,
    moe_mlp_loop,
)


def _problem(b, t, d, h, n_exp, k, dtype=torch.float64, skip=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    allowed = torch.tensor([e for e in range(n_exp) if e != skip])
    ids = torch.stack([allowed[torch.randperm(len(allowed), generator=gen)[:k]] for _ in range(b)])
    weights = torch.rand(b, k, generator=gen, dtype=dtype) + 0.1
    return (
        torch.randn(b, t, d, generator=gen, dtype=dtype),
        torch.randn(n_exp, 2 * h, d, generator=gen, dtype=dtype) / d**0.5,
        torch.randn(n_exp, d, h, generator=gen, dtype=dtype) / h**0.5,
        ids,
        weights / weights.sum(1, keepdim=True),
    )


def _grads(fn, x, w13, w2, ids, weights, gy):
    leaves = [v.clone().requires_grad_() for v in (x, w13, w2, weights)]
    out = fn(leaves[0], leaves[1], leaves[2], ids, leaves[3])
    out.backward(gy)
    return [out.detach()] + [v.grad for v in leaves]


# (B, T, d, h, E, k, skipped expert)
CASES = [(6, 5, 16, 24, 4, 2, 3), (5, 13, 8, 16, 3, 1, None), (4, 3, 16, 8, 2, 2, None)]


@pytest.mark.parametrize("fn", [moe_mlp_loop, moe_mlp_dense], ids=lambda f: f.__name__)
@pytest.mark.parametrize("case", CASES)
def test_fast_paths_equal_reference_fp64(fn, case):
    b, t, d, h, n_exp, k, skip = case
    x, w13, w2, ids, weights = _problem(b, t, d, h, n_exp, k, skip=skip)
    gy = torch.randn(b, t, d, dtype=torch.float64)
    want = _grads(moe_mlp_reference, x, w13, w2, ids, weights, gy)
    for got, ref in zip(_grads(fn, x, w13, w2, ids, weights, gy), want):
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", CASES[:1] + [(3, 4, 8, 8, 2, 1, None)])
def test_grouped_mm_path_equals_reference_fp32(case):
    b, t, d, h, n_exp, k, skip = case
    x, w13, w2, ids, weights = _problem(b, t, d, h, n_exp, k, torch.float32, skip=skip)
    gy = torch.randn(b, t, d)
    got = _grads(moe_mlp_grouped_mm, x, w13, w2, ids, weights, gy)
    for g, w in zip(got, _grads(moe_mlp_reference, x, w13, w2, ids, weights, gy)):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_grouped_mm_accepts_a_broadcast_gradient():
    x, w13, w2, ids, weights = _problem(4, 3, 8, 8, 3, 2, torch.float32)
    leaves = [v.requires_grad_() for v in (x, w13, w2)]
    moe_mlp_grouped_mm(leaves[0], leaves[1], leaves[2], ids, weights).sum().backward()  # expanded grad
    ref = [v.detach().clone().requires_grad_() for v in (x, w13, w2)]
    moe_mlp_reference(ref[0], ref[1], ref[2], ids, weights).sum().backward()
    for a, b in zip(leaves, ref):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)


def test_gradcheck_of_the_loop_path():
    x, w13, w2, ids, weights = _problem(3, 2, 4, 3, 3, 2)
    args = [v.requires_grad_() for v in (x, w13, w2, weights)]
    assert torch.autograd.gradcheck(lambda a, b, c, w: moe_mlp_loop(a, b, c, ids, w), args)


def test_cached_torch_path_equals_reference():
    _, w13, w2, _, _ = _problem(1, 1, 16, 24, 5, 2)
    x = torch.randn(7, 16, dtype=torch.float64)
    ids, weights = torch.tensor([4, 1]), torch.tensor([0.2, 0.8], dtype=torch.float64)
    want = cached_moe_mlp_reference(x, w13, w2, ids, weights)
    torch.testing.assert_close(cached_moe_mlp_torch(x, w13, w2, ids, weights), want)
    torch.testing.assert_close(cached_moe_mlp_gathered(x, w13, w2, ids, weights), want)  # the CUDA variant
    # Caching is exact: the cached op equals moe_mlp with every sample routed the same way.
    batched = moe_mlp_reference(x[None], w13, w2, ids[None], weights[None])[0]
    torch.testing.assert_close(cached_moe_mlp_torch(x, w13, w2, ids, weights), batched)


def test_public_ops_on_cpu_use_torch_and_match(monkeypatch):
    monkeypatch.delenv("KERNELS_BACKEND", raising=False)
    x, w13, w2, ids, weights = _problem(4, 5, 8, 8, 3, 2, torch.float32)
    assert backend_for(x) == "torch"
    want = moe_mlp_reference(x, w13, w2, ids, weights)
    torch.testing.assert_close(kernels.moe_mlp(x, w13, w2, ids, weights), want)
    x64, w13_64, w2_64, ids64, weights64 = _problem(4, 5, 6, 5, 3, 2)  # unaligned + fp64: the loop path
    torch.testing.assert_close(kernels.moe_mlp(x64, w13_64, w2_64, ids64, weights64),
                               moe_mlp_reference(x64, w13_64, w2_64, ids64, weights64))  # fmt: skip


def test_backend_env_var_errors_are_clear(monkeypatch):
    x = torch.zeros(2, 3, 4)
    monkeypatch.setenv("KERNELS_BACKEND", "cuda")
    with pytest.raises(ValueError, match="KERNELS_BACKEND"):
        backend_for(x)
    monkeypatch.setenv("KERNELS_BACKEND", "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        backend_for(x)
    monkeypatch.setenv("KERNELS_BACKEND", "torch")
    assert backend_for(x) == "torch"


def test_shape_errors_name_the_expected_layout():
    x, w13, w2, ids, weights = _problem(2, 3, 8, 4, 3, 2, torch.float32)
    with pytest.raises(ValueError, match=r"expected \[E, d, h\]"):
        kernels.moe_mlp(x, w13, w2.transpose(1, 2), ids, weights)
    with pytest.raises(ValueError, match=r"\[B, k\]"):
        kernels.moe_mlp(x, w13, w2, ids[:1], weights[:1])
    with pytest.raises(ValueError, match=r"\[k\]"):
        kernels.cached_moe_mlp(x[0], w13, w2, ids, weights)


@pytest.mark.parametrize("case", CASES)
def test_training_op_loop_equals_reference_fp64(case):
    from kernels.torch_moe_train import moe_mlp_train

    b, t, d, h, n_exp, k, skip = case
    x, w13, w2, ids, weights = _problem(b, t, d, h, n_exp, k, skip=skip)
    gy = torch.randn(b, t, d, dtype=torch.float64)
    want = _grads(moe_mlp_reference, x, w13, w2, ids, weights, gy)
    got = _grads(lambda *a: moe_mlp_train(*a, strategy="loop"), x, w13, w2, ids, weights, gy)
    for g, ref in zip(got, want):
        torch.testing.assert_close(g, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", CASES[:1] + [(3, 4, 8, 8, 2, 1, None)])
def test_training_op_grouped_equals_reference_fp32(case):
    from kernels.torch_moe_train import moe_mlp_train

    b, t, d, h, n_exp, k, skip = case
    x, w13, w2, ids, weights = _problem(b, t, d, h, n_exp, k, torch.float32, skip=skip)
    gy = torch.randn(b, t, d)
    want = _grads(moe_mlp_reference, x, w13, w2, ids, weights, gy)
    got = _grads(lambda *a: moe_mlp_train(*a, strategy="grouped"), x, w13, w2, ids, weights, gy)
    for g, ref in zip(got, want):
        torch.testing.assert_close(g, ref, rtol=1e-4, atol=1e-5)


def test_training_op_passes_torch_library_checks():
    """The custom op's fake, schema and registered autograd agree with its real implementation."""
    from kernels.torch_moe_train import moe_mlp_train_fwd

    x, w13, w2, ids, weights = _problem(3, 4, 8, 8, 4, 2, torch.float32)
    args = (x.requires_grad_(), w13.requires_grad_(), w2.requires_grad_(), ids, weights.requires_grad_(), "loop")
    torch.library.opcheck(moe_mlp_train_fwd, args)


def test_dispatcher_trains_through_the_custom_op():
    x, w13, w2, ids, weights = _problem(3, 4, 8, 8, 4, 2, torch.float32)
    out = kernels.moe_mlp(x.requires_grad_(), w13, w2, ids, weights)
    assert "moe_mlp_train" in out.grad_fn.name()
