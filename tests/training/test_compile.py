"""trainer.compile: the compiled training step follows the eager one, and the MoE op stays exact under compile.

Compiling on the CPU takes tens of seconds, so there are two tests: a tiny MoDE trained for STEPS steps
both ways from the same weights and batches, and the MoE op's gradients under compile against the reference.
"""

from __future__ import annotations

import copy

import torch

import kernels
from benchmarks.common import LIFT_ACTION_DIM, LIFT_STATE, lift_state_setup
from kernels.reference import moe_mlp_reference
from policies.base import Policy, compile_loss

STEPS = 200
TINY = {"width": 16, "n_layers": 2, "n_heads": 2, "expert_hidden": 32, "router_hidden": 8, "state_hidden": 16}


def _batches(policy: Policy, n: int, size: int = 8) -> list[dict]:
    gen = torch.Generator().manual_seed(1)
    to, horizon = policy.config["n_obs_steps"], policy.config["horizon"]
    return [{"obs": {k: torch.randn(size, to, d, generator=gen) for k, d in LIFT_STATE.items()},
             "action": torch.rand(size, horizon, LIFT_ACTION_DIM, generator=gen) * 2 - 1,
             "action_is_pad": torch.zeros(size, horizon, dtype=torch.bool),
             "task": torch.zeros(size, dtype=torch.long), "goal": {}} for _ in range(n)]


def _train(policy: Policy, loss_fn, batches: list[dict]) -> list[float]:
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-4)
    losses = []
    for i, batch in enumerate(batches):
        torch.manual_seed(i)  # the same noise levels and noise both ways
        loss, _ = loss_fn(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_compiled_training_follows_eager_training():
    torch._dynamo.reset()
    normalizer, shape_meta = lift_state_setup(64)
    torch.manual_seed(0)
    eager = Policy.build("mode", TINY, shape_meta, normalizer).train()
    compiled, start = copy.deepcopy(eager), copy.deepcopy(eager)
    batches = _batches(eager, 4) * (STEPS // 4)
    want = torch.tensor(_train(eager, eager.compute_loss, batches))
    # Inductor draws random numbers its own way; with its fallback both runs draw the same σ and noise.
    with torch._inductor.config.patch(fallback_random=True):
        got = torch.tensor(_train(compiled, compile_loss(compiled), batches))
    # Step by step the same up to fp32 rounding; the two trajectories drift apart by rounding only slowly.
    torch.testing.assert_close(got[:10], want[:10], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4)
    for (name, p), q, p0 in zip(eager.named_parameters(), compiled.parameters(), start.parameters()):
        assert not torch.equal(p, p0) and not torch.equal(q, p0), f"{name} was not trained"  # experts too


def test_moe_op_gradients_under_compile_match_the_reference():
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(0)
    b, t, d, h, n_exp, k = 6, 5, 16, 24, 4, 2
    x = torch.randn(b, t, d, generator=gen)
    w13, w2 = torch.randn(n_exp, 2 * h, d, generator=gen) / 4, torch.randn(n_exp, d, h, generator=gen) / 5
    ids = torch.stack([torch.randperm(n_exp, generator=gen)[:k] for _ in range(b)])
    weights = torch.rand(b, k, generator=gen).softmax(-1)
    gy = torch.randn(b, t, d, generator=gen)

    def grads(fn):
        leaves = [v.clone().requires_grad_() for v in (x, w13, w2, weights)]
        out = fn(leaves[0], leaves[1], leaves[2], ids, leaves[3])
        out.backward(gy)
        return [out.detach(), *(v.grad for v in leaves)]

    compiled = torch.compile(kernels.moe_mlp, fullgraph=True)  # one graph: the op traces without a break
    for got, want in zip(grads(compiled), grads(moe_mlp_reference)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
