"""Every inference path of the transformer policies against the eager fp32 cached/uncached reference:
each cached kernel variant, torch.compile of one step and of the whole loop, CUDA-graph replay (CUDA
only), bf16 and int8 (policies/quantize.py) with their stated error bounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import kernels.moe as moe
from data.normalize import Normalizer
from kernels.torch_moe import HOST_VARIANTS
from policies.base import Policy
from policies.diffusion import goal_from_batch
from policies.quantize import (
    LowPrecisionMoE,
    fbgemm_available,
    fbgemm_matmul,
    fbgemm_pack,
    int8_matmul,
    int8_weight,
    quantize_policy,
)
from tests.policies.policy_batches import batch_for

DA = 4
# Action error bounds of the reduced precisions, in env units, for actions in [-1, 1] (range 2):
# measured max errors on these tiny models are <= 0.003 (bf16) and <= 0.011 (int8) over 3 seeds.
BOUNDS = {"bf16": (0.005, 0.001), "int8": (0.02, 0.003)}  # (max abs, mean abs); README: int8 ≤ 0.02


def make(name: str = "mode", seed: int = 0, **overrides) -> Policy:
    rng = np.random.default_rng(0)
    arrays = {"action": rng.uniform(-1, 1, size=(200, DA)).astype(np.float32),
              "pos": rng.normal(size=(200, 5)).astype(np.float32)}
    shape_meta = {"obs": {"pos": {"shape": [5], "type": "low_dim"}}, "action": {"shape": [DA]},
                  "n_tasks": 3, "lang_dim": 0}
    cfg = {"n_obs_steps": 2, "horizon": 8, "n_action_steps": 6, "width": 64, "n_layers": 2, "n_heads": 2,
           "state_hidden": 32, "num_sampling_steps": 4, **overrides}
    if name == "mode":
        cfg = {"expert_hidden": 64, "router_hidden": 16, **cfg}
    torch.manual_seed(seed)
    policy = Policy.build(name, cfg, shape_meta, Normalizer.fit(arrays, {"action": "limits", "pos": "limits"}))
    torch.nn.init.normal_(policy.net.head.weight, std=0.1)  # the zero-initialised head would hide the blocks
    return policy.eval()


def act(policy: Policy, batch: dict, seed: int = 0) -> torch.Tensor:
    return policy.predict_action(batch["obs"], goal_from_batch(batch), generator=torch.Generator().manual_seed(seed))


def uncached(policy: Policy, batch: dict) -> torch.Tensor:
    policy.net.expert_cache = False
    try:
        return act(policy, batch)
    finally:
        policy.net.expert_cache = True


@pytest.fixture(autouse=True)
def fresh_choices():
    moe.clear_cached_choices()
    yield
    moe.clear_cached_choices()


# --- the cached expert path ---------------------------------------------------------------------
@pytest.mark.parametrize("variant", sorted(HOST_VARIANTS))
def test_each_cached_variant_samples_what_uncached_sampling_does(variant, monkeypatch):
    policy = make(num_experts=4, top_k=2)
    batch = batch_for(policy, b=3)
    monkeypatch.setattr(moe, "DEFAULT_HOST_VARIANT", variant)
    ran = []
    fn = HOST_VARIANTS[variant]
    monkeypatch.setitem(HOST_VARIANTS, variant, lambda *a: ran.append(1) or fn(*a))
    torch.testing.assert_close(act(policy, batch), uncached(policy, batch), rtol=1e-5, atol=1e-5)
    assert len(ran) == policy.cfg.n_layers * policy.cfg.num_sampling_steps


def test_route_table_holds_the_listed_routes_as_tensors():
    policy = make(num_experts=5, top_k=3)
    table = policy.net.plan_routes(policy.edm.sigmas())
    assert table.ids.shape == (policy.cfg.num_sampling_steps, policy.cfg.n_layers, 3)
    for step, layers in enumerate(table):
        for layer, (ids, weights) in enumerate(layers):
            assert torch.equal(ids, table.ids[step, layer]) and torch.equal(weights, table.weights[step, layer])


# --- compiled sampling ----------------------------------------------------------------------------
def test_compiled_loop_equals_eager():
    policy, compiled = make(), make(compile="loop")
    batch = batch_for(policy, b=2)
    torch.testing.assert_close(act(compiled, batch), act(policy, batch), rtol=1e-5, atol=1e-5)
    other = batch_for(policy, b=2, seed=1)  # new inputs and noise through the same compiled graph
    torch.testing.assert_close(act(compiled, other, seed=3), act(policy, other, seed=3), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("overrides", [{}, pytest.param({"router": "dtr"}, marks=pytest.mark.slow)],
                         ids=["learned", "dtr"])
def test_compiled_step_equals_eager(overrides):
    policy, compiled = make(**overrides), make(compile="step", **overrides)
    batch = batch_for(policy, b=2)
    torch.testing.assert_close(act(compiled, batch), act(policy, batch), rtol=1e-5, atol=1e-5)
    compiled.load_state_dict(make(seed=1, **overrides).state_dict())  # the table follows new weights
    torch.testing.assert_close(act(compiled, batch), act(make(seed=1, **overrides), batch), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_compiled_int8_equals_eager_int8():
    policy = make()
    batch = batch_for(policy, b=2)
    eager = quantize_policy(policy, "int8")
    compiled = quantize_policy(make(compile="step"), "int8")
    torch.testing.assert_close(act(compiled, batch), act(eager, batch), rtol=1e-5, atol=1e-5)


def test_graph_mode_on_the_cpu_says_it_needs_cuda():
    policy = make(compile="graph")
    with pytest.raises(RuntimeError, match="compile=graph captures CUDA graphs and needs the policy on a CUDA"):
        act(policy, batch_for(policy))


def test_unknown_compile_mode_is_refused():
    with pytest.raises(ValueError, match="unknown compile 'fast'; choose one of none, step, loop, graph"):
        make(compile="fast")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA-graph capture needs a CUDA device")
def test_cuda_graph_replay_equals_eager_and_follows_new_weights():
    policy, graphed = make().cuda(), make(compile="graph").cuda()
    batch = {k: (v.cuda() if isinstance(v, torch.Tensor) else {kk: vv.cuda() for kk, vv in v.items()})
             for k, v in batch_for(policy, b=2).items()}

    def run(p, seed=0):
        return p.predict_action(batch["obs"], goal_from_batch(batch),
                                generator=torch.Generator("cuda").manual_seed(seed))

    torch.testing.assert_close(run(graphed), run(policy), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(run(graphed, 1), run(policy, 1), rtol=1e-4, atol=1e-4)  # replayed, new noise
    new = make(seed=1).cuda()
    graphed.load_state_dict(new.state_dict())  # in place: the captured graph reads the new weights
    torch.testing.assert_close(run(graphed), run(new), rtol=1e-4, atol=1e-4)


# --- reduced precision ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["bf16", "int8"])
@pytest.mark.parametrize("name, overrides", [("mode", {}), ("mode", {"shared_expert": True}),
                                             ("mode", {"router": "dtr"}), ("dit", {})],
                         ids=["mode", "shared", "dtr", "dit"])
def test_reduced_precision_stays_within_its_bound(dtype, name, overrides):
    policy = make(name, **overrides)
    batch = batch_for(policy, b=8)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    ref = act(policy, batch)
    quantized = quantize_policy(policy, dtype)
    err = (act(quantized, batch) - ref).abs()
    max_bound, mean_bound = BOUNDS[dtype]
    assert 0 < err.max().item() <= max_bound and err.mean().item() <= mean_bound
    for k, v in policy.state_dict().items():  # the input policy is untouched and still fp32
        assert torch.equal(v, before[k])
    want = torch.int8 if dtype == "int8" else torch.bfloat16
    block = quantized.net.blocks[0]
    w13 = block.mlp.w13  # experts: a buffer; dense and DTR MLPs: a _Weight holding one
    assert block.attn.qkv.weight.w.dtype == want and getattr(w13, "w", w13).dtype == want


@pytest.mark.parametrize("dtype", ["bf16", "int8"])
def test_quantized_copy_holds_no_fp32_copy_of_the_quantized_weights(dtype):
    policy = make(expert_hidden=128)
    quantized = quantize_policy(policy, dtype)
    fp32 = sum(p.numel() for p in quantized.parameters() if p.dtype == torch.float32)
    big = sum(m.w13.numel() + m.w2.numel() for m in policy.net.sparse_layers())
    assert fp32 < sum(p.numel() for p in policy.parameters()) - big
    assert isinstance(quantized.net.blocks[0].mlp, LowPrecisionMoE)
    assert quantized.net.blocks[0].mlp.router[0].weight.dtype == torch.float32  # routing stays fp32
    routes_fp32 = policy.net.plan_routes(policy.edm.sigmas())
    routes_q = quantized.net.plan_routes(policy.edm.sigmas())
    assert torch.equal(routes_fp32.ids, routes_q.ids)


@pytest.mark.parametrize("dtype", ["bf16", "int8"])
def test_quantized_uncached_sampling_equals_cached(dtype):
    quantized = quantize_policy(make(num_experts=4, top_k=2), dtype)
    batch = batch_for(quantized, b=3)
    tol = 1e-5 if dtype == "int8" else 5e-3  # bf16: the grouped and the looped GEMMs round differently
    torch.testing.assert_close(act(quantized, batch), uncached(quantized, batch), rtol=tol, atol=tol)


def test_int8_matmul_is_exact_integer_arithmetic():
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(5, 24, generator=g), torch.randn(16, 24, generator=g)
    wq, scale = int8_weight(w)
    assert wq.dtype == torch.int8 and wq.abs().max() == 127
    sx = x.abs().amax(1, keepdim=True) / 127
    want = (torch.round(x / sx).double() @ wq.double().t()) * sx.double() * scale.double()
    torch.testing.assert_close(int8_matmul(x, wq, scale).double(), want, rtol=1e-6, atol=1e-6)
    assert ((int8_matmul(x, wq, scale) - x @ w.t()).norm() / (x @ w.t()).norm()).item() < 0.02


@pytest.mark.skipif(not fbgemm_available(), reason="fbgemm is the CPU int8 engine")
def test_fbgemm_gemm_does_not_overflow_on_this_cpu():
    """Every element's error stays near int8's rounding: without VNNI, fbgemm's int16 pair sums overflow
    with 8-bit activations (13-29% error per GEMM measured on an AVX2 CPU), so those CPUs get 7 bits."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(16, 64, generator=g), torch.randn(192, 64, generator=g) * 0.05
    ref = x @ w.t()
    err = (fbgemm_matmul(x, fbgemm_pack(*int8_weight(w))) - ref).abs().max() / ref.abs().max()
    assert err.item() < 0.03


def test_precision_errors_are_clear():
    policy = make()
    with pytest.raises(ValueError, match="unknown precision 'fp8'; choose one of fp32, bf16, int8"):
        quantize_policy(policy, "fp8")
    assert quantize_policy(policy, "fp32") is policy
    cnn = Policy.build("cnn", {"n_obs_steps": 2, "horizon": 8, "n_action_steps": 6}, policy.shape_meta,
                       policy.normalizer)
    with pytest.raises(ValueError, match="applies to the transformer policies"):
        quantize_policy(cnn, "int8")
