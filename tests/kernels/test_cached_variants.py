"""Cached-inference variants of the expert MLP: each equals the reference, and which one runs is a
recorded, deterministic per-shape choice (kernels/moe.py)."""

from __future__ import annotations

import pytest
import torch

import kernels
import kernels.moe as moe
from kernels.reference import cached_moe_mlp_reference
from kernels.torch_moe import HOST_VARIANTS, cached_moe_mlp_torch

# expert id sets: consecutive, consecutive reversed, a gap, k=1, k=3 unevenly spaced, k=3 consecutive
ID_SETS = [[1, 2], [2, 1], [0, 3], [2], [0, 1, 3], [3, 1, 2]]


def _operands(m=7, d=16, h=24, n_exp=4, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(m, d, generator=g, dtype=dtype),
            torch.randn(n_exp, 2 * h, d, generator=g, dtype=dtype) / d**0.5,
            torch.randn(n_exp, d, h, generator=g, dtype=dtype) / h**0.5)


@pytest.fixture(autouse=True)
def fresh_table(monkeypatch):
    monkeypatch.delenv("KERNELS_BACKEND", raising=False)
    monkeypatch.delenv("KERNELS_CACHED_AUTOTUNE", raising=False)
    moe.clear_cached_choices()
    yield
    moe.clear_cached_choices()


@pytest.mark.parametrize("variant", sorted(HOST_VARIANTS))
@pytest.mark.parametrize("experts", ID_SETS, ids=str)
def test_every_host_variant_equals_the_reference(variant, experts):
    ids = torch.tensor(experts)
    w = torch.rand(len(experts), generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.1
    x, w13, w2 = _operands()
    want = cached_moe_mlp_reference(x, w13, w2, ids, w)
    got = cached_moe_mlp_torch(x, w13, w2, ids, w, variant=variant)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # fp32 at unit scale: the variants differ from the reference by rounding only
    x32, w13_32, w2_32 = (t.float() for t in (x, w13, w2))
    got32 = cached_moe_mlp_torch(x32, w13_32, w2_32, ids, w.float(), variant=variant)
    want32 = cached_moe_mlp_reference(x32, w13_32, w2_32, ids, w.float())
    assert (got32 - want32).abs().max().item() <= 1e-6


def test_default_choice_is_fixed_and_a_recorded_choice_is_the_one_that_runs(monkeypatch):
    x, w13, w2 = (t.float() for t in _operands())
    ids, w = torch.tensor([1, 2]), torch.tensor([0.25, 0.75])
    default = moe.DEFAULT_HOST_VARIANT
    assert moe.cached_choice(x, w13, 2) == default
    ran = []
    for name, fn in HOST_VARIANTS.items():
        monkeypatch.setitem(HOST_VARIANTS, name, lambda *a, _n=name, _f=fn: ran.append(_n) or _f(*a))
    kernels.cached_moe_mlp(x, w13, w2, ids, w)
    key = moe.cached_key(x, w13, 2)
    moe.record_cached_choice(key, "strided")
    out = kernels.cached_moe_mlp(x, w13, w2, ids, w)
    assert ran == [default, "strided"]
    assert moe.cached_choices() == {key: "strided"}
    assert (out - cached_moe_mlp_reference(x, w13, w2, ids, w)).abs().max().item() <= 1e-6
    other = moe.cached_key(x[:3], w13, 2)  # another M: its own entry, still the default
    assert other != key and moe.cached_choice(x[:3], w13, 2) == default


def test_autotune_records_the_fastest_variant():
    x, w13, w2 = (t.float() for t in _operands())
    ids, w = torch.tensor([0, 1]), torch.tensor([0.5, 0.5])
    fake = {"loop": 3.0, "adjacent": 2.0, "strided": 1.0}  # not the default: the record must show
    times = moe.autotune_cached(x, w13, w2, ids, w, repeats=3, measure=lambda name, fn: fake[name])
    assert times == fake
    assert moe.cached_choice(x, w13, 2) == "strided" != moe.DEFAULT_HOST_VARIANT
    real = moe.autotune_cached(x, w13, w2, ids, w, repeats=2)  # the wall-clock timer: some variant wins
    assert set(real) == set(HOST_VARIANTS) and moe.cached_choice(x, w13, 2) == min(real, key=real.get)


def test_autotune_on_first_use_fills_the_table(monkeypatch):
    monkeypatch.setenv("KERNELS_CACHED_AUTOTUNE", "1")
    x, w13, w2 = (t.float() for t in _operands())
    ids, w = torch.tensor([3, 0]), torch.tensor([0.4, 0.6])
    out = kernels.cached_moe_mlp(x, w13, w2, ids, w)
    assert moe.cached_key(x, w13, 2) in moe.cached_choices()
    assert (out - cached_moe_mlp_reference(x, w13, w2, ids, w)).abs().max().item() <= 1e-6


def test_bad_variant_names_are_refused():
    x, w13, _ = _operands()
    with pytest.raises(ValueError, match="unknown cached MoE variant 'fast'"):
        moe.record_cached_choice(moe.cached_key(x, w13, 2), "fast")


def test_gradients_still_flow_through_the_cached_op():
    x, w13, w2 = _operands()
    ids = torch.tensor([2, 0])
    w = torch.tensor([0.3, 0.7], dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (x, w13, w2, w)]
    kernels.cached_moe_mlp(*leaves[:3], ids, leaves[3]).sum().backward()
    ref = [t.clone().requires_grad_() for t in (x, w13, w2, w)]
    cached_moe_mlp_reference(*ref[:3], ids, ref[3]).sum().backward()
    for a, b in zip(leaves, ref):
        torch.testing.assert_close(a.grad, b.grad)


def test_the_custom_op_equals_the_eager_op():
    x, w13, w2 = (t.float() for t in _operands())
    ids, w = torch.tensor([1, 3]), torch.tensor([0.2, 0.8])
    torch.testing.assert_close(moe._cached_moe_mlp_op(x, w13, w2, ids, w), kernels.cached_moe_mlp(x, w13, w2, ids, w),
                               rtol=0, atol=0)
    torch.library.opcheck(moe._cached_moe_mlp_op, (x, w13, w2, ids, w), test_utils=("test_schema", "test_faketensor"))
